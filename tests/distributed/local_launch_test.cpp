// LaunchLocal, the engine of `iisan launch`, on shell commands: the ranks' environment, and a
// failed rank ending the launch after the grace period.
#include "distributed/local_launch.h"

#include <chrono>

#include <gtest/gtest.h>

namespace iisan::distributed {
namespace {

LocalLaunchOptions Shell(int nproc, const std::string& script) {
  LocalLaunchOptions options;
  options.nproc = nproc;
  options.command = {"/bin/sh", "-c", script};
  options.grace = std::chrono::milliseconds(200);
  return options;
}

TEST(LocalLaunchTest, EveryRankGetsItsEnvironment) {
  // Each rank checks its own variables; the rendezvous folder exists while they run.
  const auto result = LaunchLocal(Shell(
      3, "test \"$IISAN_WORLD_SIZE\" = 3 && test \"$IISAN_LOCAL_RANK\" = \"$IISAN_RANK\" && "
         "case \"$IISAN_RENDEZVOUS\" in file:*) test -d \"${IISAN_RENDEZVOUS#file:}\";; *) exit 5;; esac"));
  EXPECT_EQ(result.exit_code, 0) << result.message;
  EXPECT_TRUE(result.message.empty());
}

TEST(LocalLaunchTest, AFailedRankEndsTheOthersAfterTheGracePeriod) {
  const auto start = std::chrono::steady_clock::now();
  const auto result = LaunchLocal(Shell(3, "if [ \"$IISAN_RANK\" = 1 ]; then exit 7; fi; exec sleep 30"));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(result.exit_code, 7);
  EXPECT_EQ(result.message.rfind("rank 1 exited with code 7", 0), 0u) << result.message;
  EXPECT_NE(result.message.find("rank 0 was killed by signal 15"), std::string::npos) << result.message;
  EXPECT_LT(seconds, 5.0);
}

TEST(LocalLaunchTest, MissingProgramIsReported) {
  LocalLaunchOptions options;
  options.nproc = 2;
  options.command = {"/nonexistent/iisan"};
  const auto result = LaunchLocal(options);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.message.find("cannot start /nonexistent/iisan"), std::string::npos) << result.message;
}

}  // namespace
}  // namespace iisan::distributed
