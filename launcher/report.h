// `iisan report`. `efficiency RUN_DIR...` compares finished runs by training time, trainable
// parameters and peak memory, with the paper's TPME score (IISAN.md §7.1) computed within the
// given set; it reads each run's summary.json and writes efficiency.md and efficiency.svg.
// `metrics RUN_DIR...` prints each run's epochs from its metrics.jsonl.
#pragma once

#include <filesystem>
#include <ostream>
#include <vector>

namespace iisan::launcher {

// Validates every run before writing anything: a missing summary.json, a missing or wrongly
// typed field, a run given twice or runs whose peak memory was measured differently throw
// std::runtime_error naming the run, file and field. Then writes out_dir/efficiency.md and
// out_dir/efficiency.svg atomically (out_dir is created if needed), rows in the order given,
// and prints the markdown to `out`.
void ReportEfficiency(const std::vector<std::filesystem::path>& run_dirs, const std::filesystem::path& out_dir,
                      std::ostream& out);

// `iisan report metrics RUN_DIR...`: each run's metrics.jsonl as a markdown table of its epochs,
// for runs in progress or killed too (no summary.json needed), printed to `out`. An incomplete
// last line (a kill while it was appended) is skipped with a note naming the file and line; any
// other bad line is an std::runtime_error naming them.
void ReportMetrics(const std::vector<std::filesystem::path>& run_dirs, std::ostream& out);

}  // namespace iisan::launcher
