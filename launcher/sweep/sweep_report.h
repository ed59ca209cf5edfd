// `iisan sweep report SWEEP_DIR`: the sweep's trials as a table (parameters, metric, epochs run,
// status, seconds), an SVG of the metric against each searched parameter and one of the
// best-so-far over time, and the best trial's config as a ready-to-run JSON. Reads the sweep
// database read-only, so it works while the sweep runs.
#pragma once

#include <filesystem>
#include <ostream>

namespace iisan::launcher::sweep {

// Writes OUT/trials.md, OUT/best_config.json, OUT/metric_vs_<key>.svg and OUT/best_so_far.svg
// (OUT: dir/report by default) and prints the table.
void SweepReport(const std::filesystem::path& dir, const std::filesystem::path& out_dir, std::ostream& out);

}  // namespace iisan::launcher::sweep
