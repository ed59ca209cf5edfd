// Run directory creation and atomic JSON writes.
#include "launcher/run_dir.h"

#include <chrono>
#include <ctime>
#include <stdexcept>

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
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json json;
    try {
      json = data::ParseJsonInput<nlohmann::json>(line, (path_ / "metrics.jsonl").string());
    } catch (const data::InputError&) {
      continue;  // a torn or foreign line: dropped, as resuming rewrites the file
    }
    if (!json.is_object() || !json.contains("epoch") || !json["epoch"].is_number_integer()) continue;
    if (json["epoch"].get<int>() <= epochs) kept += line + "\n";
  }
  data::WriteFileAtomically(path, kept);
}

void RunDirectory::AppendMetrics(const nlohmann::ordered_json& line) {
  std::ofstream out(path_ / "metrics.jsonl", std::ios::app);
  out << line.dump() << "\n";
  out.flush();
  if (!out) throw std::runtime_error((path_ / "metrics.jsonl").string() + ": write failed (disk full?)");
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
