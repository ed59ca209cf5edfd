// `iisan sweep report SWEEP_DIR`: the sweep's trials as a table (parameters, metric, epochs run,
// status, seconds), an SVG of the metric against each searched parameter and one of the
// best-so-far over time, and the best trial's config as a ready-to-run JSON. Reads the sweep
// database read-only, so it works while the sweep runs.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace iisan::launcher::sweep {

// Writes OUT/trials.md, OUT/best_config.json, OUT/metric_vs_<key>.svg and OUT/best_so_far.svg
// (OUT: dir/report by default) and prints the table.
void SweepReport(const std::filesystem::path& dir, const std::filesystem::path& out_dir, std::ostream& out);

// One chart: a scatter (or a line) of (x, y) points, x on a log scale when asked. With
// categories, x is a category's index and every category has a place on the axis.
std::string ScatterSvg(const std::string& title, const std::string& x_label, const std::string& y_label,
                       const std::vector<std::pair<double, double>>& points, bool log_x, bool line,
                       const std::vector<std::string>& categories = {});

}  // namespace iisan::launcher::sweep
