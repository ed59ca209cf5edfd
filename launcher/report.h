// `iisan report efficiency RUN_DIR...`: compares finished runs by training time, trainable
// parameters and peak memory, with the paper's TPME score (IISAN.md §7.1) computed within the
// given set. Reads each run's summary.json; writes efficiency.md and efficiency.svg.
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

}  // namespace iisan::launcher
