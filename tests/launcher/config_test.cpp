// Config resolution: defaults, files, overrides, and errors that name the key.
#include "launcher/config.h"

#include <fstream>

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

TEST(ConfigTest, DefaultsLeaveBatchAndLearningRatesToTheMethod) {
  // 0 = the reference's value for model.method, filled in by PrepareJob (IISAN.md §6).
  const auto config = ResolveConfig({}, {});
  EXPECT_EQ(At(config, "model.method").get<std::string>(), "iisan");
  EXPECT_EQ(At(config, "train.batch_size").get<int>(), 0);
  EXPECT_DOUBLE_EQ(At(config, "train.lr.recsys").get<double>(), 0.0);
  EXPECT_TRUE(At(config, "train.lr.text").is_number_float());
  EXPECT_EQ(At(config, "data.max_seq_len").get<int>(), 10);
  EXPECT_EQ(At(config, "model.bottleneck").get<int>(), 64);
}

TEST(ConfigTest, OverridesParseJsonValuesAndKeepTypes) {
  Json config = DefaultConfig();
  ApplyOverride(config, "train.batch_size=32");
  ApplyOverride(config, "train.lr.recsys=0.001");
  ApplyOverride(config, "model.modality=text");
  ApplyOverride(config, "name=42");
  ApplyOverride(config, "model.kept_layers=[0,2,4]");
  EXPECT_EQ(At(config, "train.batch_size").get<int>(), 32);
  EXPECT_DOUBLE_EQ(At(config, "train.lr.recsys").get<double>(), 0.001);
  EXPECT_EQ(At(config, "model.modality").get<std::string>(), "text");
  EXPECT_EQ(At(config, "name").get<std::string>(), "42");
  EXPECT_EQ(At(config, "model.kept_layers").get<std::vector<int>>(), (std::vector<int>{0, 2, 4}));
}

TEST(ConfigTest, IntegerKeyAcceptsNoFraction) {
  Json config = DefaultConfig();
  const auto message = ErrorOf([&] { ApplyOverride(config, "train.batch_size=3.5"); });
  EXPECT_NE(message.find("train.batch_size"), std::string::npos) << message;
  EXPECT_NE(message.find("integer"), std::string::npos) << message;
}

TEST(ConfigTest, FloatKeyAcceptsInteger) {
  Json config = DefaultConfig();
  ApplyOverride(config, "train.lr.text=1");
  EXPECT_TRUE(At(config, "train.lr.text").is_number_float());
}

TEST(ConfigTest, UnknownKeyNamesTheNearestValidKey) {
  Json config = DefaultConfig();
  auto message = ErrorOf([&] { ApplyOverride(config, "train.bach_size=32"); });
  EXPECT_NE(message.find("unknown config key 'train.bach_size'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'train.batch_size'"), std::string::npos) << message;

  message = ErrorOf([&] { ApplyOverride(config, "model.modalty=text"); });
  EXPECT_NE(message.find("'model.modality'"), std::string::npos) << message;
}

TEST(ConfigTest, FileErrorsNameTheFile) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "config_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "bad.json";
  std::ofstream(path) << R"({"train": {"epochs": 3, "lr": {"recsis": 0.1}}})";
  const auto message = ErrorOf([&] { ResolveConfig(path, {}); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("train.lr.recsys"), std::string::npos) << message;

  std::ofstream(dir / "broken.json") << "{\"train\": ";
  EXPECT_NE(ErrorOf([&] { ResolveConfig(dir / "broken.json", {}); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { ResolveConfig(dir / "absent.json", {}); }).find("cannot open"), std::string::npos);
}

TEST(ConfigTest, FileThenOverridesInOrder) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "config_test_order";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "c.json") << R"({"train": {"epochs": 3, "batch_size": 16}})";
  const auto config = ResolveConfig(dir / "c.json", {"train.epochs=5", "train.epochs=7"});
  EXPECT_EQ(At(config, "train.epochs").get<int>(), 7);
  EXPECT_EQ(At(config, "train.batch_size").get<int>(), 16);
  EXPECT_EQ(At(config, "train.patience").get<int>(), 10);
}

TEST(ConfigTest, ObjectKeyRejectsScalar) {
  Json config = DefaultConfig();
  const auto message = ErrorOf([&] { ApplyOverride(config, "train.lr=0.1"); });
  EXPECT_NE(message.find("'train.lr' must be an object"), std::string::npos) << message;
}

}  // namespace
}  // namespace iisan::launcher
