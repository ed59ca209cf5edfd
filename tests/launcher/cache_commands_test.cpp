// What `iisan cache serve` makes of an ensure request's config: a cache location outside the
// service's folder, however it is spelled, is refused by the config key that names it.
#include <gtest/gtest.h>

#include "cache/state_file.h"
#include "launcher/commands.h"

namespace iisan::launcher {
namespace {

std::string ResolveError(const cache::SpecResolver& resolve, const nlohmann::json& overlay) {
  try {
    resolve(overlay);
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

TEST(CacheServiceResolverTest, CacheLocationsOutsideTheServicesFolderAreRefusedByKey) {
  const auto root = std::filesystem::path(::testing::TempDir()) / "cache_service_resolver";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "cache");
  std::filesystem::create_directories(root / "elsewhere");
  std::filesystem::create_directory_symlink(root / "elsewhere", root / "cache" / "link");
  const auto resolve = CacheServiceResolver(root / "cache");
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"path", "/tmp/stolen.h5"},
           {"path", "../stolen.h5"},
           {"path", (root / "cache" / ".." / "stolen.h5").string()},
           {"path", "link/stolen.h5"},
           {"dir", (root / "elsewhere").string()},
           {"dir", ".."}}) {
    const auto message = ResolveError(resolve, {{"cache", {{key, value}}}});
    EXPECT_NE(message.find("the request's cache." + key + ": " + value), std::string::npos) << message;
    EXPECT_NE(message.find("not inside the cache folder"), std::string::npos) << message;
  }
  // Inside the folder (or the folder itself) the location passes; this request then fails for
  // what it lacks (a dataset), not for where it points.
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"path", "0123456789abcdef.h5"}, {"dir", (root / "cache").string()}, {"dir", "."}}) {
    const auto message = ResolveError(resolve, {{"cache", {{key, value}}}});
    EXPECT_EQ(message.find("not inside"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace iisan::launcher
