// A small synthetic dataset and tiny text and image backbones (random weights) in a folder, for
// the cache tests: in-process builder options, and the `iisan` arguments that point at them.
#pragma once

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "cache/cache_key.h"
#include "core/data/dataset.h"
#include "core/data/synthetic.h"

namespace iisan::cache::testing {

namespace fs = std::filesystem;

inline void WriteText(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A fresh folder named after the running test.
inline fs::path FreshDir(const std::string& prefix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = fs::path(::testing::TempDir()) / (prefix + "_" + info->test_suite_name() + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// root/data (items items, 16-pixel PNGs), root/text and root/image backbones (hidden 16, 2 layers).
inline void WriteTinyProblem(const fs::path& root, int items = 48, uint64_t seed = 7) {
  data::SynthOptions synth;
  synth.num_users = 60;
  synth.num_items = items;
  synth.num_categories = 4;
  synth.image_size = 16;
  synth.seed = seed;
  data::WriteSyntheticDataset(root / "data", synth);
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (char c = 'a'; c <= 'z'; ++c) vocab += std::string(1, c) + "\n##" + std::string(1, c) + "\n";
  for (char c = '0'; c <= '9'; ++c) vocab += std::string(1, c) + "\n##" + std::string(1, c) + "\n";
  vocab += "-\n";
  WriteText(root / "text/vocab.txt", vocab);
  WriteText(root / "text/config.json", R"({"vocab_size": 78, "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40})");
  WriteText(root / "image/config.json", R"({"hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16, "patch_size": 8})");
  WriteText(root / "image/preprocessor_config.json", R"({"size": 16})");
}

inline data::Dataset LoadTinyDataset(const fs::path& root) {
  data::PreprocessOptions preprocess;
  preprocess.require_images = true;
  return data::LoadDataset(root / "data", preprocess);
}

inline CacheBuildOptions TinyOptions(const fs::path& root) {
  CacheBuildOptions options;
  options.text_backbone = root / "text";
  options.image_backbone = root / "image";
  options.batch_size = 20;
  options.chunk_items = 10;
  return options;
}

// `--set` arguments of a config that points at root's problem and caches in `cache_dir`.
inline std::string TinyConfigArgs(const fs::path& root, const fs::path& cache_dir) {
  return " --set data.dir=" + (root / "data").string() + " --set model.text_backbone=" + (root / "text").string() +
         " --set model.image_backbone=" + (root / "image").string() + " --set cache.dir=" + cache_dir.string() +
         " --set cache.batch_size=8 --set cache.chunk_items=8";
}

struct CommandResult {
  int exit_code;
  std::string output;
};

// Runs a shell command (stdout and stderr together).
inline CommandResult RunShell(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  std::string output;
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe.get())) output += buffer.data();
  const int status = pclose(pipe.release());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

inline CommandResult RunIisan(const std::string& args, const std::string& env = "") {
  return RunShell(env + (env.empty() ? "" : " ") + IISAN_BINARY + std::string(" ") + args);
}

inline size_t CountOccurrences(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

}  // namespace iisan::cache::testing
