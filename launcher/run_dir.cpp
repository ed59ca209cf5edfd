// Run directory creation and atomic JSON writes.
#include "launcher/run_dir.h"

#include <chrono>
#include <ctime>
#include <stdexcept>

#include <glog/logging.h>

#include "core/data/atomic_file.h"
#include "core/data/json_input.h"

namespace iisan::launcher {

void WriteJsonAtomically(const std::filesystem::path& path, const nlohmann::ordered_json& value) {
  data::WriteFileAtomically(path, value.dump(2) + "\n");
}

RunDirectory RunDirectory::Create(const std::filesystem::path& root, const std::string& name,
                                  const nlohmann::ordered_json& config) {
  const auto path = root / name;
  if (std::filesystem::exists(path) && !std::filesystem::is_empty(path)) {
    throw std::runtime_error(path.string() + ": a run directory with this name exists already; choose "
                             "another name with --set name=... or move it away (nothing was overwritten)");
  }
  return Initialise(path, config);
}

RunDirectory RunDirectory::Reopen(const std::filesystem::path& root, const std::string& name,
                                  const nlohmann::ordered_json& config,
                                  const std::function<void(const nlohmann::ordered_json& stored)>& check) {
  const auto path = root / name;
  std::ifstream in(path / "config.json");
  if (!in) {
    throw std::runtime_error(path.string() + ": no run to resume here (no config.json); check run_root and name, "
                             "or drop train.resume to start a new run");
  }
  nlohmann::ordered_json stored;
  try {
    stored = data::ReadJsonFile<nlohmann::ordered_json>(path / "config.json");
  } catch (const data::InputError& error) {
    throw std::runtime_error(error.what());
  }
  check(stored);
  return Initialise(path, config);
}

RunDirectory RunDirectory::Initialise(const std::filesystem::path& path, const nlohmann::ordered_json& config) {
  std::filesystem::create_directories(path / "log");
  std::filesystem::create_directories(path / "checkpoints");
  WriteJsonAtomically(path / "config.json", config);
  return RunDirectory(path);
}

void RunDirectory::TruncateMetrics(int epochs) {
  const auto path = path_ / "metrics.jsonl";
  std::ifstream in(path);
  std::string kept, line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    nlohmann::json json;
    try {
      json = data::ParseJsonInput<nlohmann::json>(line, path.string() + ":" + std::to_string(number));
    } catch (const data::InputError& error) {
      // A torn line (a kill mid-append) or a foreign one: dropped, as resuming rewrites the file.
      LOG(WARNING) << "dropping a line that is not JSON: " << error.what();
      continue;
    }
    if (!json.is_object() || !json.contains("epoch") || !json["epoch"].is_number_integer()) continue;
    if (json["epoch"].get<int>() <= epochs) kept += line + "\n";
  }
  data::WriteFileAtomically(path, kept);
}

void RunDirectory::AppendMetrics(const nlohmann::ordered_json& line) {
  // Synced as it is written: the line of a finished epoch survives a crash of the machine too.
  data::AppendDurably(path_ / "metrics.jsonl", line.dump() + "\n");
}

void RunDirectory::WriteSummary(const nlohmann::ordered_json& summary) {
  WriteJsonAtomically(path_ / "summary.json", summary);
}

std::string TimestampedName(const std::string& prefix) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y%m%d-%H%M%S", &tm);
  return prefix + "-" + buffer;
}

}  // namespace iisan::launcher
