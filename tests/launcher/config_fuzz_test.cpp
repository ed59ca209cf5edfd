// Config loading under fuzzing (tests/fuzz_mutator.h): damaged config files, JSON documents of
// any shape and damaged `--set` overrides either give a valid config that survives a round trip
// through JSON, or raise a ConfigError that names the file, document or override; nothing else
// escapes, nothing crashes or hangs.
#include "launcher/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/fuzz_mutator.h"

namespace iisan::launcher {
namespace {

namespace fs = std::filesystem;
using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;

constexpr int64_t kIterations = 1500;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> ConfigCorpus() {
  const fs::path configs = fs::path(IISAN_SOURCE_DIR) / "experiments" / "configs";
  return {ReadText(configs / "demo.json"), ReadText(configs / "scientific-text-small.json"),
          ConfigToJson(LoadConfig("", {})).dump(2),
          "// a comment\n{\"train\": {\"lr\": {\"recsys\": 1e-4}, /* inline */ \"resume\": \"auto\"},\n"
          " \"model\": {\"kept_layers\": [0, 2, 4], \"method\": \"lora\"}, \"eval\": {\"ks\": [10, 20]}}\n"};
}

std::vector<std::string> KeyDictionary() {
  std::vector<std::string> tokens = {"{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "//", "/*", "*/",
                                     "\\u0000", "\\ud800", "\"\\u00e9\""};
  for (const auto& entry : ConfigSchemaJson()) {
    const std::string key = entry["key"].get<std::string>();
    tokens.push_back("\"" + key.substr(key.rfind('.') + 1) + "\"");
  }
  return tokens;
}

// What every loaded config must satisfy: it validates, and writing it out and reading it back
// gives the same config.
void CheckLoaded(const Config& config) {
  ValidateConfig(config, "the loaded config");
  FuzzRequire(ConfigFromJson(ConfigToJson(config, /*redact_secrets=*/false), "its own JSON") == config,
              "a config survives ConfigToJson and ConfigFromJson unchanged");
}

std::string Mentions(const ConfigError& error, const std::string& what) {
  const std::string message = error.what();
  return message.find(what) != std::string::npos ? "" : "the ConfigError does not name " + what + ": " + message;
}

fs::path FreshFile(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = fs::path(::testing::TempDir()) / ("config_fuzz_" + std::string(info->name()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir / name;
}

TEST(ConfigFuzzTest, DamagedConfigFilesLoadOrNameTheFile) {
  const auto path = FreshFile("config.json");
  FuzzMutator mutator(201, ConfigCorpus(), KeyDictionary());
  const auto outcome = RunFuzz<ConfigError>(
      mutator, kIterations,
      [&](const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
        CheckLoaded(LoadConfig(path, {}));
      },
      [&](const ConfigError& error) { return Mentions(error, path.string()); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
  fs::remove_all(path.parent_path());
}

// A JSON value of any type: extreme numbers, strings, short lists, nested objects.
Json RandomValue(FuzzMutator& random, int depth = 0) {
  const auto& numbers = FuzzMutator::ExtremeNumbers();
  switch (random.Below(depth > 3 ? 6 : 8)) {
    case 0: return nullptr;
    case 1: return random.Below(2) == 1;
    case 2: {
      const Json number = Json::parse(numbers[random.Below(numbers.size())], nullptr, /*allow_exceptions=*/false);
      return number.is_discarded() ? Json(numbers[random.Below(numbers.size())]) : number;
    }
    case 3: return static_cast<int64_t>(random.Below(200)) - 100;
    case 4: {
      static const std::vector<std::string> strings = {"", "auto", "cpu", "cuda:1024", "text", "iisan", "float32",
                                                       "\xC3\xA9", std::string(300, 'x'), "../../etc"};
      return strings[random.Below(strings.size())];
    }
    case 5: return static_cast<double>(random.Below(1000)) / 7.0;
    case 6: {
      Json list = Json::array();
      for (uint64_t n = random.Below(5); n > 0; --n) list.push_back(RandomValue(random, depth + 1));
      return list;
    }
    default: {
      Json object = Json::object();
      for (uint64_t n = random.Below(4); n > 0; --n) object["k" + std::to_string(random.Below(3))] = RandomValue(random, depth + 1);
      return object;
    }
  }
}

// Documents shaped like configs (schema keys and sections, sometimes misspelt or misplaced) with
// values of every type at every key.
TEST(ConfigFuzzTest, DocumentsOfAnyShapeGiveAConfigOrNameTheDocument) {
  std::vector<std::string> keys;
  for (const auto& entry : ConfigSchemaJson()) keys.push_back(entry["key"].get<std::string>());
  FuzzMutator random(202, {"unused"});
  const std::string source = "the fuzzed document";
  int64_t parsed = 0, refused = 0;
  for (int64_t i = 0; i < kIterations; ++i) {
    Json document = Json::object();
    for (uint64_t n = 1 + random.Below(4); n > 0; --n) {
      std::string key = keys[random.Below(keys.size())];
      if (random.Below(8) == 0) key += "x";                        // misspelt
      if (random.Below(8) == 0) key = key.substr(key.find('.') + 1);  // misplaced
      Json* node = &document;
      for (size_t dot = key.find('.'); dot != std::string::npos; dot = key.find('.')) {
        Json& child = (*node)[key.substr(0, dot)];
        if (!child.is_object()) child = Json::object();
        node = &child;
        key = key.substr(dot + 1);
      }
      (*node)[key] = RandomValue(random);
    }
    if (random.Below(10) == 0) document = RandomValue(random);
    try {
      CheckLoaded(ConfigFromJson(document, source));
      ++parsed;
    } catch (const ConfigError& error) {
      ++refused;
      const std::string problem = Mentions(error, source);
      EXPECT_TRUE(problem.empty()) << problem << "\ndocument: " << document.dump();
    } catch (const std::exception& error) {
      ADD_FAILURE() << "an exception of another type escaped: " << error.what() << "\ndocument: " << document.dump();
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(refused, 0);
}

TEST(ConfigFuzzTest, DamagedOverridesApplyOrNameTheOverride) {
  FuzzMutator mutator(203,
                      {"train.batch_size=32", "model.kept_layers=[0,2,4]", "name=42", "train.lr={\"recsys\":1e-3}",
                       "train.resume=true", "train.device=cuda:3", "eval.ks=[5,10]", "model.dropout=0.25",
                       "seed=18446744073709551615"},
                      KeyDictionary());
  const auto outcome = RunFuzz<ConfigError>(
      mutator, kIterations,
      [&](const std::string& assignment) {
        Config config = LoadConfig("", {});
        ApplyOverride(config, assignment);
        CheckLoaded(config);
      },
      [&](const ConfigError& error) { return Mentions(error, "--set"); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

}  // namespace
}  // namespace iisan::launcher
