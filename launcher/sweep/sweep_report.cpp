#include "launcher/sweep/sweep_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/data/atomic_file.h"
#include "core/data/json_input.h"
#include "launcher/sweep/scheduler.h"
#include "launcher/sweep/sweep_store.h"

namespace iisan::launcher::sweep {
namespace {

namespace fs = std::filesystem;

std::string Number(double value, int digits = 4) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*g", digits, value);
  return text;
}

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string Cell(const Json& value) {
  if (value.is_number_float()) return Number(value.get<double>());
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

}  // namespace

std::string ScatterSvg(const std::string& title, const std::string& x_label, const std::string& y_label,
                       const std::vector<std::pair<double, double>>& points, bool log_x, bool line,
                       const std::vector<std::string>& categories) {
  const double width = 640, height = 400, left = 70, right = 20, top = 40, bottom = 60;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!points.empty()) {
    x0 = x1 = log_x ? std::log10(points[0].first) : points[0].first;
    y0 = y1 = points[0].second;
    for (const auto& [x, y] : points) {
      const double px = log_x ? std::log10(x) : x;
      x0 = std::min(x0, px);
      x1 = std::max(x1, px);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!categories.empty()) {
    // Every category has its place, whether or not a trial has reported for it yet.
    x0 = -0.5;
    x1 = static_cast<double>(categories.size()) - 0.5;
  }
  if (x1 - x0 < 1e-12) {
    x0 -= 0.5;
    x1 += 0.5;
  }
  if (y1 - y0 < 1e-12) {
    y0 -= 0.01;
    y1 += 0.01;
  }
  const double pad_y = 0.05 * (y1 - y0);
  y0 -= pad_y;
  y1 += pad_y;
  auto sx = [&](double x) { return left + ((log_x ? std::log10(x) : x) - x0) / (x1 - x0) * (width - left - right); };
  auto sy = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom); };
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << Escape(title)
      << "</text>\n";
  svg << "<line x1=\"" << left << "\" y1=\"" << height - bottom << "\" x2=\"" << width - right << "\" y2=\""
      << height - bottom << "\" stroke=\"black\"/>\n<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left
      << "\" y2=\"" << height - bottom << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4;
    svg << "<text x=\"" << left - 6 << "\" y=\"" << sy(y) + 4 << "\" text-anchor=\"end\">" << Number(y, 3)
        << "</text>\n";
    if (categories.empty()) {
      const double xv = x0 + (x1 - x0) * i / 4;
      const double shown = log_x ? std::pow(10.0, xv) : xv;
      svg << "<text x=\"" << left + (xv - x0) / (x1 - x0) * (width - left - right) << "\" y=\"" << height - bottom + 18
          << "\" text-anchor=\"middle\">" << Number(shown, 3) << "</text>\n";
    }
  }
  for (size_t i = 0; i < categories.size(); ++i) {
    svg << "<text x=\"" << sx(static_cast<double>(i)) << "\" y=\"" << height - bottom + 18
        << "\" text-anchor=\"middle\">" << Escape(categories[i].substr(0, 16)) << "</text>\n";
  }
  svg << "<text x=\"" << width / 2 << "\" y=\"" << height - 12 << "\" text-anchor=\"middle\">" << Escape(x_label)
      << (log_x ? " (log scale)" : "") << "</text>\n";
  svg << "<text x=\"16\" y=\"" << height / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " << height / 2
      << ")\">" << Escape(y_label) << "</text>\n";
  if (line && points.size() > 1) {
    svg << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
    for (const auto& [x, y] : points) svg << sx(x) << "," << sy(y) << " ";
    svg << "\"/>\n";
  }
  for (const auto& [x, y] : points) {
    svg << "<circle cx=\"" << sx(x) << "\" cy=\"" << sy(y) << "\" r=\"4\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

namespace {

std::string FileSafe(const std::string& key) {
  std::string out;
  for (char c : key) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

}  // namespace

void SweepReport(const fs::path& dir, const fs::path& out_dir_in, std::ostream& out) {
  const auto db = dir / "sweep.db";
  if (!fs::exists(db)) throw std::runtime_error(db.string() + ": missing; is " + dir.string() + " a sweep directory?");
  SweepStore store(db, /*read_only=*/true);
  const auto spec_text = store.Meta("spec");
  if (!spec_text) throw std::runtime_error(db.string() + ": holds no sweep spec");
  const auto spec = ParseSweepSpec(data::ParseJsonInput<Json>(*spec_text, db.string() + " spec"), db.string());
  const auto trials = store.Trials();
  const fs::path out_dir = out_dir_in.empty() ? dir / "report" : out_dir_in;
  fs::create_directories(out_dir);

  // The table.
  std::ostringstream table;
  table << "| trial |";
  for (const auto& dim : spec.space) table << " " << dim.key << " |";
  table << " " << spec.metric << " | best epoch | epochs | status | attempts | seconds |\n|---:|";
  for (size_t i = 0; i < spec.space.size(); ++i) table << "---|";
  table << "---:|---:|---:|---|---:|---:|\n";
  const TrialRow* best = nullptr;
  for (const auto& row : trials) {
    table << "| " << row.id << " |";
    for (const auto& dim : spec.space) table << " " << (row.params.contains(dim.key) ? Cell(row.params.at(dim.key)) : "—") << " |";
    table << " " << (row.best ? Number(*row.best) : "—") << " | " << row.best_epoch << " | " << row.epochs << " | "
          << TrialStatusName(row.status) << " | " << row.attempts << " | " << Number(row.seconds, 3) << " |\n";
    if (row.best && (!best || (spec.maximize ? *row.best > *best->best : *row.best < *best->best))) best = &row;
  }
  int counts[6] = {};
  for (const auto& row : trials) ++counts[static_cast<int>(row.status)];
  std::ostringstream md;
  md << "# Sweep " << spec.name << "\n\n" << trials.size() << " trials: " << counts[2] << " completed, " << counts[3]
     << " early-stopped, " << counts[4] << " pruned, " << counts[5] << " failed, " << counts[1] << " running, "
     << counts[0] << " pending. Metric: " << spec.metric << " (" << (spec.maximize ? "max" : "min") << ").\n\n";
  if (best) md << "Best: trial " << best->id << ", " << spec.metric << " " << Number(*best->best) << " at epoch "
               << best->best_epoch << " (" << best->run_dir << "); its config is best_config.json.\n\n";
  md << table.str();
  data::WriteFileAtomically(out_dir / "trials.md", md.str());
  out << md.str();

  // The best config, ready to run: `iisan train --config best_config.json`.
  if (best) {
    Config config = TrialConfig(spec, best->params, "best trial");
    config.name.clear();
    config.train.resume = "false";
    data::WriteFileAtomically(out_dir / "best_config.json", ConfigToJson(config).dump(2) + "\n");
  }

  // Metric against each searched parameter.
  for (const auto& dim : spec.space) {
    std::vector<std::pair<double, double>> points;
    std::vector<std::string> categories;
    const bool numeric = dim.values.empty() ||
                         std::all_of(dim.values.begin(), dim.values.end(), [](const Json& v) { return v.is_number(); });
    if (!numeric) {
      for (const auto& v : dim.values) categories.push_back(Cell(v));
    }
    for (const auto& row : trials) {
      if (!row.best || !row.params.contains(dim.key)) continue;
      const auto& value = row.params.at(dim.key);
      if (numeric && value.is_number()) {
        points.emplace_back(value.get<double>(), *row.best);
      } else {
        const auto it = std::find(categories.begin(), categories.end(), Cell(value));
        points.emplace_back(static_cast<double>(it - categories.begin()), *row.best);
      }
    }
    const bool log_x = dim.kind == DimensionKind::kLogUniform;
    data::WriteFileAtomically(out_dir / ("metric_vs_" + FileSafe(dim.key) + ".svg"),
                              ScatterSvg(spec.metric + " against " + dim.key, dim.key, spec.metric, points, log_x, false,
                                  categories));
  }
  // Best so far against time since the sweep started (trials in the order they finished).
  std::vector<const TrialRow*> finished;
  for (const auto& row : trials) {
    if (IsTerminal(row.status) && row.finished > 0) finished.push_back(&row);
  }
  std::sort(finished.begin(), finished.end(), [](const TrialRow* a, const TrialRow* b) { return a->finished < b->finished; });
  const double start = store.Started(0);
  std::vector<std::pair<double, double>> curve;
  std::optional<double> so_far;
  for (const auto* row : finished) {
    if (row->best && (!so_far || (spec.maximize ? *row->best > *so_far : *row->best < *so_far))) so_far = row->best;
    if (so_far) curve.emplace_back(row->finished - start, *so_far);
  }
  data::WriteFileAtomically(out_dir / "best_so_far.svg",
                            ScatterSvg("best " + spec.metric + " so far", "seconds since the sweep started", spec.metric, curve,
                                false, true));
  out << "\nwrote " << (out_dir / "trials.md").string() << ", best_config.json and " << spec.space.size() + 1
      << " SVG chart(s) in " << out_dir.string() << "\n";
}

}  // namespace iisan::launcher::sweep
