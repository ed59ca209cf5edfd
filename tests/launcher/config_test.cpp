// Config resolution: defaults, files, overrides, the schema's ranges and choices, and errors that
// name the key.
#include "launcher/config.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

namespace iisan::launcher {
namespace {

std::string ErrorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

bool Names(const std::string& message, const std::string& key) {
  return message.find("'" + key + "'") != std::string::npos;
}

// Every dotted leaf key of a nested JSON object.
void LeafKeys(const Json& node, const std::string& prefix, std::set<std::string>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      LeafKeys(*it, key, out);
    } else {
      out.insert(key);
    }
  }
}

TEST(ConfigTest, DefaultsLeaveBatchAndLearningRatesToTheMethod) {
  // 0 = the reference's value for model.method, filled in by PrepareJob (IISAN.md §6).
  const auto config = LoadConfig({}, {});
  EXPECT_EQ(config.model.method, "iisan");
  EXPECT_EQ(config.train.batch_size, 0);
  EXPECT_DOUBLE_EQ(config.train.lr.recsys, 0.0);
  EXPECT_TRUE(ConfigToJson(config)["train"]["lr"]["text"].is_number_float());
  EXPECT_EQ(config.data.max_seq_len, 10);
  EXPECT_EQ(config.model.bottleneck, 64);
  EXPECT_EQ(config.seed, 12345u);
  EXPECT_EQ(config.eval.ks, (std::vector<int>{5, 10, 20}));
  EXPECT_EQ(config.cache.dir, "cache");
  EXPECT_TRUE(config.train.cuda_graph);
  EXPECT_DOUBLE_EQ(config.train.collective_timeout_s, 300.0);
}

TEST(ConfigTest, BackboneInitSeedDefaultsToWhatTheSeedWas) {
  // Random backbones are initialised as the default seed initialised them before
  // model.backbone_init_seed existed; the two keys are set independently.
  const auto config = LoadConfig({}, {});
  EXPECT_EQ(config.model.backbone_init_seed, 12345u);
  EXPECT_EQ(config.model.backbone_init_seed, config.seed);
  const auto set = LoadConfig({}, {"model.backbone_init_seed=7", "seed=9"});
  EXPECT_EQ(set.model.backbone_init_seed, 7u);
  EXPECT_EQ(set.seed, 9u);
}

TEST(ConfigTest, AblationAndEvaluationKeysDefaultToTodaysBehaviour) {
  // The paper's IISAN (three gated towers) and the reference's evaluation.
  const auto config = LoadConfig({}, {});
  EXPECT_EQ(config.model.iisan_towers, "intra+inter");
  EXPECT_EQ(config.model.fusion, "gated");
  EXPECT_EQ(config.model.iisan_schedule, "auto");
  EXPECT_FALSE(config.eval.count_repeated_targets);
  const auto set = LoadConfig({}, {"model.iisan_towers=inter", "model.fusion=add", "eval.count_repeated_targets=true",
                                   "model.iisan_schedule=separate"});
  EXPECT_EQ(set.model.iisan_schedule, "separate");
  EXPECT_EQ(set.model.iisan_towers, "inter");
  EXPECT_EQ(set.model.fusion, "add");
  EXPECT_TRUE(set.eval.count_repeated_targets);
  EXPECT_TRUE(Names(ErrorOf([] { LoadConfig({}, {"model.fusion=concat"}); }), "model.fusion"));
  EXPECT_TRUE(Names(ErrorOf([] { LoadConfig({}, {"model.iisan_schedule=fused"}); }), "model.iisan_schedule"));
  EXPECT_TRUE(Names(ErrorOf([] { LoadConfig({}, {"model.iisan_towers=intra_inter"}); }), "model.iisan_towers"));
  EXPECT_TRUE(Names(ErrorOf([] { LoadConfig({}, {"eval.count_repeated_targets=1"}); }),
                    "eval.count_repeated_targets"));
}

TEST(ConfigTest, OverridesParseJsonValuesAndKeepTypes) {
  Config config = LoadConfig({}, {});
  ApplyOverride(config, "train.batch_size=32");
  ApplyOverride(config, "train.lr.recsys=0.001");
  ApplyOverride(config, "model.modality=text");
  ApplyOverride(config, "name=42");
  ApplyOverride(config, "model.kept_layers=[0,2,4]");
  ApplyOverride(config, "seed=18446744073709551615");
  EXPECT_EQ(config.train.batch_size, 32);
  EXPECT_DOUBLE_EQ(config.train.lr.recsys, 0.001);
  EXPECT_EQ(config.model.modality, "text");
  EXPECT_EQ(config.name, "42");
  EXPECT_EQ(config.model.kept_layers, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(config.seed, std::numeric_limits<uint64_t>::max());
  ApplyOverride(config, "train.lr={\"text\": 0.5}");
  EXPECT_DOUBLE_EQ(config.train.lr.text, 0.5);
}

TEST(ConfigTest, IntegerKeyAcceptsNoFraction) {
  Config config = LoadConfig({}, {});
  const auto message = ErrorOf([&] { ApplyOverride(config, "train.batch_size=3.5"); });
  EXPECT_NE(message.find("train.batch_size"), std::string::npos) << message;
  EXPECT_NE(message.find("integer"), std::string::npos) << message;
  EXPECT_NE(message.find("number"), std::string::npos) << message;
}

TEST(ConfigTest, FloatKeyAcceptsInteger) {
  Config config = LoadConfig({}, {});
  ApplyOverride(config, "train.lr.text=1");
  EXPECT_DOUBLE_EQ(config.train.lr.text, 1.0);
  EXPECT_TRUE(ConfigToJson(config)["train"]["lr"]["text"].is_number_float());
}

TEST(ConfigTest, UnknownKeyNamesTheNearestValidKey) {
  Config config = LoadConfig({}, {});
  auto message = ErrorOf([&] { ApplyOverride(config, "train.bach_size=32"); });
  EXPECT_NE(message.find("unknown config key 'train.bach_size'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'train.batch_size'"), std::string::npos) << message;

  message = ErrorOf([&] { ApplyOverride(config, "model.modalty=text"); });
  EXPECT_NE(message.find("'model.modality'"), std::string::npos) << message;

  message = ErrorOf([&] { SetConfigKey(config, "eval.k", Json::array({10}), "sweep"); });
  EXPECT_NE(message.find("sweep: unknown config key 'eval.k'"), std::string::npos) << message;
  EXPECT_NE(message.find("'eval.ks'"), std::string::npos) << message;

  // A dotted member name is not a key of the object it sits in.
  message = ErrorOf([&] { ConfigFromJson(Json::parse(R"({"train.epochs": 3})"), "doc"); });
  EXPECT_NE(message.find("unknown config key 'train.epochs'"), std::string::npos) << message;
}

// Found by ConfigFuzzTest: an override that is not UTF-8 became a string value, and naming it in
// an error (or writing config.json) threw nlohmann's type_error instead of a ConfigError.
TEST(ConfigTest, OverridesThatAreNotUtf8AreRefused) {
  for (const std::string assignment : {"seed=1\xff", "name=caf\xe9", "eval.ks=[5\xcf,10]", "tr\x80in.epochs=3"}) {
    Config config = LoadConfig("", {});
    const std::string message = ErrorOf([&] { ApplyOverride(config, assignment); });
    EXPECT_NE(message.find("not valid UTF-8"), std::string::npos) << message;
  }
  Config config = LoadConfig("", {});
  ApplyOverride(config, "name=caf\xc3\xa9");
  EXPECT_EQ(config.name, "caf\xc3\xa9");
}

TEST(ConfigTest, FileErrorsNameTheFile) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "config_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "bad.json";
  std::ofstream(path) << R"({"train": {"epochs": 3, "lr": {"recsis": 0.1}}})";
  const auto message = ErrorOf([&] { LoadConfig(path, {}); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("train.lr.recsys"), std::string::npos) << message;

  std::ofstream(dir / "broken.json") << "{\"train\": ";
  EXPECT_NE(ErrorOf([&] { LoadConfig(dir / "broken.json", {}); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { LoadConfig(dir / "absent.json", {}); }).find("cannot open"), std::string::npos);
}

TEST(ConfigTest, FileThenOverridesInOrder) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "config_test_order";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "c.json") << R"({
    // comments are allowed in config files
    "train": {"epochs": 3, "batch_size": 16}  /* and block comments */
  })";
  const auto config = LoadConfig(dir / "c.json", {"train.epochs=5", "train.epochs=7"});
  EXPECT_EQ(config.train.epochs, 7);
  EXPECT_EQ(config.train.batch_size, 16);
  EXPECT_EQ(config.train.patience, 10);
}

TEST(ConfigTest, ObjectKeyRejectsScalar) {
  Config config = LoadConfig({}, {});
  const auto message = ErrorOf([&] { ApplyOverride(config, "train.lr=0.1"); });
  EXPECT_NE(message.find("'train.lr' must be an object"), std::string::npos) << message;
}

TEST(ConfigTest, WrongTypeNamesKeyAndBothTypes) {
  Config config = LoadConfig({}, {});
  auto message = ErrorOf([&] { SetConfigKey(config, "train.cuda_graph", Json(1), "sweep"); });
  EXPECT_TRUE(Names(message, "train.cuda_graph")) << message;
  EXPECT_NE(message.find("must be boolean, got integer"), std::string::npos) << message;
  message = ErrorOf([&] { SetConfigKey(config, "eval.ks", Json::parse("[5, 10.5]"), "sweep"); });
  EXPECT_NE(message.find("must be list of integers, got array"), std::string::npos) << message;
  message = ErrorOf([&] { SetConfigKey(config, "name", Json(3), "sweep"); });
  EXPECT_NE(message.find("'name' must be string, got integer"), std::string::npos) << message;
}

TEST(ConfigTest, RangeErrorNamesKeyAndRange) {
  Config config = LoadConfig({}, {});
  const auto message = ErrorOf([&] { ApplyOverride(config, "eval.batch_size=0"); });
  EXPECT_NE(message.find("config key 'eval.batch_size' must be in [1, 1048576], got 0"), std::string::npos) << message;
  // Zero means "the method's reference value" for these keys.
  ApplyOverride(config, "train.batch_size=0");
  ApplyOverride(config, "train.lr.recsys=0");
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "train.batch_size=-1"); }).empty());
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "train.lr.text=-0.1"); }).empty());
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "seed=-1"); }).empty());
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "seed=18446744073709551616"); }).empty());
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "eval.ks=[10, 0]"); }).empty());
  EXPECT_FALSE(ErrorOf([&] { ApplyOverride(config, "train.epochs=4294967297"); }).empty());
}

// Every numeric key of the schema refuses a value just below its min and just above its max,
// non-finite numbers, and the same through `--set` text; each error names the key.
TEST(ConfigTest, EveryNumericKeyRefusesValuesOutsideItsRange) {
  const Json schema = ConfigSchemaJson();
  int checked = 0;
  for (const auto& entry : schema) {
    const std::string key = entry["key"].get<std::string>();
    const std::string type = entry["type"].get<std::string>();
    if (type != "integer" && type != "number" && type != "list of integers") continue;
    ASSERT_TRUE(entry.contains("min") && entry.contains("max")) << key;
    std::vector<Json> bad;  // values outside the range, as the key's JSON type
    if (type == "number") {
      const double min = entry["min"].get<double>(), max = entry["max"].get<double>();
      bad = {Json(std::nextafter(min, -INFINITY)), Json(std::nextafter(max, INFINITY)), Json(min - 1), Json(max * 2 + 1),
             Json(std::nan("")), Json(INFINITY), Json(-INFINITY)};
    } else {
      const int64_t min = entry["min"].get<int64_t>();
      const uint64_t max = entry["max"].get<uint64_t>();
      if (min > std::numeric_limits<int64_t>::min()) bad.push_back(Json(min - 1));
      if (max < std::numeric_limits<uint64_t>::max()) bad.push_back(Json(max + 1));
      bad.push_back(Json(std::numeric_limits<int64_t>::min()));
      if (type == "list of integers") {
        for (auto& value : bad) value = Json::array({10, value});
        Json too_long = Json::array();
        for (uint64_t i = 0; i <= entry["max_items"].get<uint64_t>(); ++i) too_long.push_back(10);
        bad.push_back(too_long);
      }
    }
    for (const auto& value : bad) {
      Config config = LoadConfig({}, {});
      const Config before = config;
      const auto message = ErrorOf([&] { SetConfigKey(config, key, value, "test"); });
      EXPECT_TRUE(Names(message, key)) << key << " = " << value.dump() << " gave: '" << message << "'";
      EXPECT_EQ(config, before) << key << ": a refused value changed the config";
      ++checked;
    }
    // The same through --set text: numbers written out, and words JSON has no number for.
    std::vector<std::string> texts;
    for (const auto& value : bad) {
      if (!value.is_number_float() || std::isfinite(value.get<double>())) texts.push_back(value.dump());
    }
    if (type == "number") texts.insert(texts.end(), {"nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"});
    if (type == "integer") texts.insert(texts.end(), {"99999999999999999999999", "-99999999999999999999999"});
    for (const auto& text : texts) {
      Config config = LoadConfig({}, {});
      const auto message = ErrorOf([&] { ApplyOverride(config, key + "=" + text); });
      EXPECT_TRUE(Names(message, key)) << "--set " << key << "=" << text << " gave: '" << message << "'";
      ++checked;
    }
    // A config that code changed after loading is checked too (PrepareJob validates).
    Config config = LoadConfig({}, {});
    Json document = ConfigToJson(config, false);
    const Json* outside = &bad.front();
    Json* slot = &document;
    std::stringstream path(key);
    for (std::string part; std::getline(path, part, '.');) slot = &(*slot)[part];
    *slot = *outside;
    EXPECT_TRUE(Names(ErrorOf([&] { ConfigFromJson(document, "doc"); }), key)) << key;
  }
  EXPECT_GT(checked, 100);
}

// The ranges themselves: sizes and counts start at 1 (0 only where it means "the method's
// reference", "none" or "never"), every bound fits its field, and no time or size can overflow.
TEST(ConfigTest, RangesRefuseZeroSizesAndOverflow) {
  const std::set<std::string> zero_allowed = {"seed", "model.backbone_init_seed", "cache.threads", "train.batch_size",
                                              "train.patience", "train.max_steps_per_epoch", "train.checkpoint_every",
                                              "train.max_requeues", "train.profile_steps",
                                              "train.check_sync_every", "model.kept_layers", "model.dropout",
                                              "model.lora_alpha", "train.lr.recsys", "train.lr.text", "train.lr.image",
                                              "train.lr.adapter_text", "train.lr.adapter_image"};
  for (const auto& entry : ConfigSchemaJson()) {
    const std::string key = entry["key"].get<std::string>();
    const std::string type = entry["type"].get<std::string>();
    if (type == "integer" || type == "list of integers") {
      EXPECT_GE(entry["min"].get<int64_t>(), zero_allowed.count(key) ? 0 : 1) << key;
      if (key != "seed" && key != "model.backbone_init_seed") {
        EXPECT_LE(entry["max"].get<uint64_t>(), uint64_t{1} << 40) << key;
      }
    }
    if (type == "number") {
      EXPECT_GE(entry["min"].get<double>(), 0.0) << key;
      if (!zero_allowed.count(key)) {
        EXPECT_GT(entry["min"].get<double>(), 0.0) << key;
      }
      EXPECT_LE(entry["max"].get<double>(), 1e6) << key;
    }
  }
  Config config = LoadConfig({}, {});
  for (const char* assignment : {"eval.batch_size=0", "eval.memory_mb=0", "cache.chunk_items=0",
                                 "cache.batch_size=-1", "train.epochs=0", "eval.ks=[10, 0]",
                                 "model.kept_layers=[-1]", "train.collective_timeout_s=0",
                                 "train.collective_timeout_s=1e7", "train.bucket_mb=0", "model.user_heads=0",
                                 "data.min_seq_len=2", "train.epochs=2147483648",
                                 "eval.batch_size=9223372036854775807"}) {
    const std::string text = assignment;
    EXPECT_TRUE(Names(ErrorOf([&] { ApplyOverride(config, text); }), text.substr(0, text.find('=')))) << text;
  }
}

TEST(ConfigTest, ValidateConfigCatchesFieldsChangedInCode) {
  Config config = LoadConfig({}, {});
  EXPECT_EQ(ErrorOf([&] { ValidateConfig(config); }), "");
  config.eval.batch_size = 0;
  EXPECT_TRUE(Names(ErrorOf([&] { ValidateConfig(config); }), "eval.batch_size"));
  config = LoadConfig({}, {});
  config.train.collective_timeout_s = std::nan("");
  EXPECT_TRUE(Names(ErrorOf([&] { ValidateConfig(config); }), "train.collective_timeout_s"));
  config = LoadConfig({}, {});
  config.train.collective_timeout_s = 1e300;  // would overflow a std::chrono deadline
  EXPECT_TRUE(Names(ErrorOf([&] { ValidateConfig(config); }), "train.collective_timeout_s"));
  config = LoadConfig({}, {});
  config.model.method = "ftt";
  EXPECT_TRUE(Names(ErrorOf([&] { ValidateConfig(config); }), "model.method"));
}

TEST(ConfigTest, ChoiceKeysRefuseOtherStrings) {
  int checked = 0;
  for (const auto& entry : ConfigSchemaJson()) {
    if (!entry.contains("choices") && !entry.contains("pattern")) continue;
    const std::string key = entry["key"].get<std::string>();
    for (const std::string bad : {"", "nonsense", "IISAN", " cpu", "cuda:", "cuda:-1", "cuda:01", "cuda:99999", "gpu"}) {
      Config config = LoadConfig({}, {});
      const auto message = ErrorOf([&] { SetConfigKey(config, key, Json(bad), "test"); });
      EXPECT_TRUE(Names(message, key)) << key << " = '" << bad << "' gave: '" << message << "'";
      EXPECT_TRUE(Names(ErrorOf([&] { ApplyOverride(config, key + "=" + bad); }), key)) << key << "=" << bad;
      ++checked;
    }
    if (entry.contains("choices")) {
      for (const auto& choice : entry["choices"]) {
        Config config = LoadConfig({}, {});
        SetConfigKey(config, key, choice, "test");
        EXPECT_EQ(ConfigToJson(config)[key.substr(0, key.find('.'))][key.substr(key.find('.') + 1)], choice);
      }
    }
  }
  // model.method, model.modality, model.iisan_towers, model.fusion, model.iisan_schedule, cache.dtype,
  // train.matmul_precision, train.resume, train.device
  EXPECT_EQ(checked, 9 * 9);
  Config config = LoadConfig({}, {});
  for (const char* device : {"cpu", "cuda", "cuda:0", "cuda:7", "cuda:1023"}) {
    EXPECT_EQ(ErrorOf([&] { ApplyOverride(config, std::string("train.device=") + device); }), "") << device;
  }
  EXPECT_NE(ErrorOf([&] { ApplyOverride(config, "cache.dtype=float16"); }).find("float32, bfloat16"),
            std::string::npos);
}

TEST(ConfigTest, SchemaListsExactlyTheKeysOfTheConfig) {
  std::set<std::string> schema_keys;
  for (const auto& entry : ConfigSchemaJson()) {
    const auto key = entry["key"].get<std::string>();
    EXPECT_TRUE(schema_keys.insert(key).second) << key << " listed twice";
    EXPECT_FALSE(entry["help"].get<std::string>().empty()) << key;
    EXPECT_TRUE(entry.contains("default")) << key;
    EXPECT_TRUE(entry.contains("type")) << key;
    // The default is a valid value of the key.
    Config config = LoadConfig({}, {});
    EXPECT_EQ(ErrorOf([&] { SetConfigKey(config, key, entry["default"], "schema"); }), "") << key;
  }
  std::set<std::string> config_keys;
  LeafKeys(ConfigToJson(LoadConfig({}, {})), "", config_keys);
  EXPECT_EQ(schema_keys, config_keys);
  EXPECT_EQ(schema_keys.size(), 58u);  // a new key needs a schema entry, a struct field and this count
}

TEST(ConfigTest, WrittenConfigLoadsBackEqual) {
  Config config = LoadConfig({}, {"name=run7", "seed=18446744073709551615", "train.lr.text=3e-5",
                                  "model.kept_layers=[0, 3, 12]", "eval.ks=[1, 10, 50]", "train.device=cuda:3",
                                  "cache.token=s3cret", "train.cuda_graph=false", "data.dir=/data/x y"});
  const auto dir = std::filesystem::path(::testing::TempDir()) / "config_test_round_trip";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << ConfigToJson(config, /*redact_secrets=*/false).dump(2);
  EXPECT_EQ(LoadConfig(dir / "config.json", {}), config);
  EXPECT_EQ(ConfigFromJson(ConfigToJson(config, false), "doc"), config);
  // Redacted, everything but the token comes back.
  Config redacted = ConfigFromJson(ConfigToJson(config), "doc");
  EXPECT_NE(redacted.cache.token, "s3cret");
  redacted.cache.token = config.cache.token;
  EXPECT_EQ(redacted, config);
}

TEST(ConfigTest, TokenIsRedacted) {
  Config config = LoadConfig({}, {"cache.token=s3cret"});
  const auto json = ConfigToJson(config);
  EXPECT_EQ(json["cache"]["token"], "<redacted>");
  EXPECT_EQ(json.dump().find("s3cret"), std::string::npos);
  EXPECT_EQ(ConfigToJson(config, false)["cache"]["token"], "s3cret");
  EXPECT_EQ(ConfigToJson(LoadConfig({}, {}))["cache"]["token"], "");  // nothing to hide
}

// Sets an environment variable for one scope.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* before = std::getenv(name)) before_ = before;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnvironment() {
    if (before_) ::setenv(name_, before_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> before_;
};

// The token a job presents to the cache service: never the placeholder of a written config.
TEST(ConfigTest, TheCacheServiceTokenComesFromTheConfigOrTheEnvironmentNeverFromAPlaceholder) {
  const Config written = ConfigFromJson(ConfigToJson(LoadConfig({}, {"cache.token=s3cret"})), "runs/a/config.json");
  ASSERT_EQ(written.cache.token, kRedacted);
  {
    ScopedEnvironment unset(kCacheTokenEnvironment, nullptr);
    const auto message = ErrorOf([&] { CacheServiceToken(written); });
    EXPECT_NE(message.find("--set cache.token="), std::string::npos) << message;
    EXPECT_NE(message.find(kCacheTokenEnvironment), std::string::npos) << message;
    EXPECT_EQ(CacheServiceToken(LoadConfig({}, {"cache.token=mine"})), "mine");
    EXPECT_EQ(CacheServiceToken(LoadConfig({}, {})), "") << "no token: none presented";
  }
  ScopedEnvironment set(kCacheTokenEnvironment, "from-env");
  EXPECT_EQ(CacheServiceToken(written), "from-env");
  EXPECT_EQ(CacheServiceToken(LoadConfig({}, {})), "from-env");
  EXPECT_EQ(CacheServiceToken(LoadConfig({}, {"cache.token=mine"})), "mine") << "the config's own token first";
}

}  // namespace
}  // namespace iisan::launcher
