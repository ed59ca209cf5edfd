// Run directories (DESIGN.md, formats): runs/<name>/ with the resolved config.json,
// metrics.jsonl (one line per epoch), summary.json (written atomically at the end), log/ and
// checkpoints/. A run never writes into a directory that already holds another run.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace iisan::launcher {

// Writes to `path.tmp` and renames, so that a reader sees the old file or the new one.
void WriteJsonAtomically(const std::filesystem::path& path, const nlohmann::ordered_json& value);

class RunDirectory {
 public:
  // Creates root/name; an existing non-empty directory is an error that says what to do.
  static RunDirectory Create(const std::filesystem::path& root, const std::string& name,
                             const nlohmann::ordered_json& config);

  // Reopens root/name to continue it (`train.resume`): it must hold a run (config.json), which
  // `check` sees (stored config) and may refuse by throwing before anything is written; then the
  // resolved config of the continuation replaces the old one.
  static RunDirectory Reopen(const std::filesystem::path& root, const std::string& name,
                             const nlohmann::ordered_json& config,
                             const std::function<void(const nlohmann::ordered_json& stored)>& check);

  const std::filesystem::path& path() const { return path_; }
  // Keeps the metrics lines of epochs 1..epochs (a kill between an epoch's line and its
  // checkpoint leaves one line too many); atomically.
  void TruncateMetrics(int epochs);
  std::filesystem::path log_dir() const { return path_ / "log"; }
  std::filesystem::path checkpoint_dir() const { return path_ / "checkpoints"; }
  // Appends one line to metrics.jsonl and syncs it (data::AppendDurably); FileWriteError.
  void AppendMetrics(const nlohmann::ordered_json& line);
  void WriteSummary(const nlohmann::ordered_json& summary);

 private:
  explicit RunDirectory(std::filesystem::path path) : path_(std::move(path)) {}
  // Makes log/ and checkpoints/ and writes config.json: what Create and Reopen share.
  static RunDirectory Initialise(const std::filesystem::path& path, const nlohmann::ordered_json& config);
  std::filesystem::path path_;
};

// A default run name from the time, e.g. "train-20261130-071502".
std::string TimestampedName(const std::string& prefix);

}  // namespace iisan::launcher
