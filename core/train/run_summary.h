// What a run reports, as types: one line of metrics.jsonl per epoch (EpochRecord) and the run's
// summary.json (RunSummary). The trainer and the training call write them, `iisan report` and
// the sweep scheduler read them; both go to and come from JSON only here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/train/ranking.h"

namespace iisan::train {

struct EpochRecord {
  int epoch = 0;
  double train_loss = 0.0;
  int64_t train_steps = 0;
  int64_t full_epoch_steps = 0;     // steps of an untruncated epoch
  double train_seconds = 0.0;       // the steps actually run, evaluation excluded
  double steady_seconds_per_step = 0.0;  // after the first steps (allocator, kernel selection)
  double eval_seconds = 0.0;        // validation, plus test at a new best
  double valid_seconds = 0.0;       // validation alone
  std::optional<double> gpu_utilization;  // mean while training, fraction
  int64_t allreduce_bytes_per_step = 0;   // data-parallel runs: gradient bytes this rank sent
  double allreduce_ms_per_step = 0.0;     // time waiting for the gradient all-reduce
  RankingMetrics valid;
  std::optional<RankingMetrics> test;  // evaluated when validation reached a new best
  bool best = false;

  nlohmann::ordered_json ToJson() const;
  // One metrics.jsonl line; std::runtime_error naming `source` and the field otherwise.
  static EpochRecord FromJson(const nlohmann::ordered_json& json, const std::string& source);
};

// A run's metrics.jsonl read back.
struct MetricsFile {
  std::vector<EpochRecord> records;  // in file order
  // The number of an incomplete last line (no newline, not JSON): what a kill or a full disk
  // leaves while a line is being appended. It is skipped; 0 when there is none.
  int64_t torn_last_line = 0;
};

// Reads one EpochRecord a line (blank lines are skipped). An incomplete last line is skipped and
// reported in `torn_last_line`; any other line that is not an epoch record is an
// std::runtime_error naming the file, the line and the field.
MetricsFile ReadMetricsFile(const std::filesystem::path& path);

// How a training call ended.
enum class RunStatus {
  kCompleted,     // every epoch of train.epochs ran
  kEarlyStopped,  // no new best validation metric for train.patience + 1 epochs
  kStopped,       // the per-epoch callback asked to stop (a sweep's early stopping)
  kCancelled,     // the cancel flag was raised; a resumable checkpoint continues the run
};
const char* RunStatusName(RunStatus status);
RunStatus ParseRunStatus(const std::string& name);  // std::runtime_error on an unknown name

// summary.json. Written once at the end of a run by the training call; `iisan report` needs the
// efficiency fields, the sweep the metrics and status.
struct RunSummary {
  static constexpr int kFormatVersion = 2;  // 1: written before the field existed (same fields)

  std::string name;
  std::string method;        // train::MethodName
  std::string method_label;  // train::MethodLabel
  std::string modality;
  std::string device;
  std::string status = RunStatusName(RunStatus::kCompleted);
  int64_t batch_size = 0;
  int best_epoch = 0;
  int epochs_run = 0;
  RankingMetrics valid;            // at the best epoch
  RankingMetrics test;             // at the best epoch
  RankingMetrics popularity_test;  // the popularity baseline
  int64_t trainable_parameters = 0;
  int world_size = 1;
  double measured_train_seconds_per_epoch = 0.0;  // mean over the epochs run
  double measured_eval_seconds_per_epoch = 0.0;
  // The efficiency comparison's inputs (IISAN.md §7.1): one training epoch (the mean after the
  // first, or extrapolated from steady steps when epochs were truncated), validation seconds,
  // peak memory and how it was measured, mean GPU utilisation where a GPU was sampled.
  double train_seconds_per_epoch = 0.0;
  bool train_epoch_extrapolated = false;
  int64_t train_steps_per_epoch = 0;
  int64_t train_steps_measured = 0;
  double eval_seconds_per_epoch = 0.0;
  int64_t peak_memory_bytes = 0;
  std::string peak_memory_kind;
  std::optional<double> gpu_utilization;
  // On a CUDA device, the peak by phase in bytes (TrainResult::memory_phases); empty on the CPU.
  std::vector<std::pair<std::string, int64_t>> memory_phases;
  // Seconds from the process's start (a sweep trial's: its own) to the end of its first training
  // step, and the phases they went to, in order; empty when no step ran.
  std::optional<double> startup_seconds;
  std::vector<std::pair<std::string, double>> startup_phases;
  std::optional<std::string> cache_path;  // cached IISAN: the cache it trained on
  std::optional<std::string> cache_fingerprint;
  std::string checkpoint;  // best.safetensors

  nlohmann::ordered_json ToJson() const;
  // Reads a summary of this or an older format (absent fields keep their defaults, except the
  // ones every reader needs: name, method, device, trainable_parameters, train and eval seconds
  // per epoch, peak memory and its kind). A newer format, a missing required field, a wrong
  // type or an impossible value (negative, a fraction outside [0, 1]) is an std::runtime_error
  // that names `source` and the field.
  static RunSummary FromJson(const nlohmann::ordered_json& json, const std::string& source);
  // FromJson of the file run_dir/summary.json, naming the file in errors.
  static RunSummary Read(const std::string& run_dir);
};

}  // namespace iisan::train
