// The efficiency report: each run's summary.json → TPME within the set → a markdown table and
// an SVG bar chart. Every run is read and checked before the first byte is written, so that a
// bad run leaves no half-finished report behind.
#include "launcher/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>


#include "core/data/atomic_file.h"
#include "core/train/efficiency.h"
#include "core/train/method.h"
#include "core/train/run_summary.h"

namespace iisan::launcher {
namespace {

using Path = std::filesystem::path;

constexpr double kBytesPerGiB = 1024.0 * 1024.0 * 1024.0;
constexpr const char* kDash = "–";
constexpr const char* kExtrapolatedMark = "*";
constexpr const char* kOtherMethodColor = "#17becf";

// Methods of train::AllMethods() get their table label; other method strings are shown as they
// are.
std::optional<train::Method> KnownMethod(const std::string& name) {
  for (const train::Method method : train::AllMethods()) {
    if (train::MethodName(method) == name) return method;
  }
  return std::nullopt;
}

std::string BarColor(const std::optional<train::Method>& method) {
  if (!method) return kOtherMethodColor;
  switch (*method) {
    case train::Method::kIisan: return "#c0392b";
    case train::Method::kIisanUncached: return "#e67e22";
    case train::Method::kFft: return "#7f7f7f";
    case train::Method::kAdapter: return "#1f77b4";
    case train::Method::kLora: return "#2ca02c";
    case train::Method::kBitfit: return "#9467bd";
  }
  return kOtherMethodColor;
}

// What the report needs from one summary.json (read through train::RunSummary).
struct RunSummary {
  Path dir;
  std::string method;
  std::string name;
  int64_t trainable_parameters = 0;
  double train_seconds_per_epoch = 0.0;
  double eval_seconds_per_epoch = 0.0;
  double peak_memory_bytes = 0.0;
  std::string peak_memory_kind;
  std::string device;
  std::optional<double> gpu_utilization;
  bool train_epoch_extrapolated = false;
  std::optional<int64_t> train_steps_measured;
  std::optional<int64_t> train_steps_per_epoch;
  std::optional<double> test_hr10;
  std::optional<double> test_ndcg10;

  std::string label() const {
    const auto known = KnownMethod(method);
    return known ? train::MethodLabel(*known) : method;
  }
  bool is_baseline() const { return KnownMethod(method) == train::Method::kFft; }
};

// ---- reading summary.json ----

// One run's summary (train::RunSummary, which checks every field) as the report uses it.
RunSummary ReadSummary(const Path& run_dir) {
  const auto summary = train::RunSummary::Read(run_dir.string());
  RunSummary run;
  run.dir = run_dir;
  run.method = summary.method;
  run.name = summary.name;
  run.trainable_parameters = summary.trainable_parameters;
  run.train_seconds_per_epoch = summary.train_seconds_per_epoch;
  run.eval_seconds_per_epoch = summary.eval_seconds_per_epoch;
  run.peak_memory_bytes = static_cast<double>(summary.peak_memory_bytes);
  run.peak_memory_kind = summary.peak_memory_kind;
  run.device = summary.device;
  run.gpu_utilization = summary.gpu_utilization;
  run.train_epoch_extrapolated = summary.train_epoch_extrapolated;
  if (summary.train_steps_measured > 0) run.train_steps_measured = summary.train_steps_measured;
  if (summary.train_steps_per_epoch > 0) run.train_steps_per_epoch = summary.train_steps_per_epoch;
  const auto& ks = summary.test.ks;
  if (std::find(ks.begin(), ks.end(), 10) != ks.end()) {
    run.test_hr10 = summary.test.hr(10);
    run.test_ndcg10 = summary.test.ndcg(10);
  }
  return run;
}

// "runs/a", "./runs/a" and "runs/a/" are the same run; a run counted twice would skew TPME.
void CheckDistinct(const std::vector<Path>& run_dirs) {
  std::map<Path, Path> given_as;
  for (const auto& dir : run_dirs) {
    Path key = std::filesystem::weakly_canonical(std::filesystem::absolute(dir)).lexically_normal();
    if (!key.has_filename()) key = key.parent_path();
    const auto [it, inserted] = given_as.emplace(key, dir);
    if (!inserted) {
      throw std::runtime_error("run directory given twice: '" + it->second.string() + "' and '" + dir.string() +
                               "'; pass each run once");
    }
  }
}

// TPME normalises each axis within the set, so memory measured two ways would be compared as if
// it were one quantity.
void CheckSameMemoryKind(const std::vector<RunSummary>& runs) {
  const auto& first = runs.front();
  for (const auto& run : runs) {
    if (run.peak_memory_kind != first.peak_memory_kind) {
      throw std::runtime_error("peak memory was measured differently: " + first.dir.string() + " has \"" +
                               first.peak_memory_kind + "\", " + run.dir.string() + " has \"" +
                               run.peak_memory_kind + "\"; TPME must compare like with like, so report "
                               "these runs in separate tables");
    }
  }
}

// ---- formatting ----

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

// Fewer decimals as values grow: 443, 38.2, 0.35.
std::string Compact(double value) { return Fixed(value, value >= 100.0 ? 0 : value >= 10.0 ? 1 : 2); }

std::string Thousands(int64_t value) {
  const std::string digits = std::to_string(value < 0 ? -value : value);
  std::string grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return value < 0 ? "-" + grouped : grouped;
}

std::string PercentOrDash(const std::optional<double>& fraction, int decimals) {
  return fraction ? Fixed(100.0 * *fraction, decimals) : kDash;
}

double GiB(double bytes) { return bytes / kBytesPerGiB; }

// The method label, with the run name added where two rows would otherwise read the same.
std::string DisplayName(const RunSummary& run, const std::vector<RunSummary>& runs) {
  int same_label = 0;
  for (const auto& other : runs) same_label += other.label() == run.label();
  return same_label > 1 ? run.label() + " (" + run.name + ")" : run.label();
}

std::string TpmeDefinition() {
  const train::TpmeWeights weights;
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer),
                "TPME = %g·time + %g·trainable params + %g·peak memory, each min–max normalised over the runs "
                "compared here (IISAN.md §7.1); lower is better.",
                weights.time, weights.parameters, weights.memory);
  return buffer;
}

// Columns are padded to equal width (counted in characters, not bytes) so the table also reads
// well in a terminal.
size_t DisplayWidth(const std::string& text) {
  size_t width = 0;
  for (const unsigned char c : text) width += (c & 0xC0) != 0x80;
  return width;
}

std::string MarkdownCell(const std::string& text) {
  std::string escaped;
  for (const char c : text) {
    if (c == '|') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

std::string MarkdownTable(const std::vector<std::string>& header, const std::vector<bool>& right_aligned,
                          const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size(), 3);
  for (size_t c = 0; c < header.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(header[c]));
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string text = "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string padding(widths[c] - DisplayWidth(cells[c]), ' ');
      text += " " + (right_aligned[c] ? padding + cells[c] : cells[c] + padding) + " |";
    }
    return text + "\n";
  };
  std::string table = line(header) + "|";
  for (size_t c = 0; c < header.size(); ++c) {
    table += right_aligned[c] ? std::string(widths[c] + 1, '-') + ":|" : ":" + std::string(widths[c] + 1, '-') + "|";
  }
  table += "\n";
  for (const auto& row : rows) table += line(row);
  return table;
}

std::string Ratio(double value) { return Fixed(value, 1) + "×"; }

// "X is N.N× faster per training epoch and uses 1/M.M of FFT's peak memory", or the converse
// wording where X is slower or larger.
std::string ComparisonWithBaseline(const RunSummary& run, const RunSummary& baseline, const std::string& name) {
  const double speedup = baseline.train_seconds_per_epoch / run.train_seconds_per_epoch;
  const double memory = run.peak_memory_bytes / baseline.peak_memory_bytes;
  const std::string baseline_label = baseline.label();
  std::string text = name + " is " +
                     (speedup >= 1.0 ? Ratio(speedup) + " faster" : Ratio(1.0 / speedup) + " slower") +
                     " per training epoch and uses ";
  text += memory <= 1.0 ? "1/" + Fixed(1.0 / memory, 1) + " of " + baseline_label + "'s peak memory"
                        : Ratio(memory) + " " + baseline_label + "'s peak memory";
  return text + ".";
}

std::string ExtrapolationNote(const std::vector<RunSummary>& runs) {
  std::string note;
  for (const auto& run : runs) {
    if (!run.train_epoch_extrapolated) continue;
    note += note.empty() ? "Train s/epoch marked " + std::string(kExtrapolatedMark) +
                               " is extrapolated from part of an epoch: "
                         : "; ";
    note += run.label() + " (" + run.name + ")";
    if (run.train_steps_measured && run.train_steps_per_epoch) {
      note += ", " + Thousands(*run.train_steps_measured) + " of " + Thousands(*run.train_steps_per_epoch) +
              " steps timed";
    }
  }
  return note.empty() ? note : note + ".\n";
}

std::string DeviceNote(const std::vector<RunSummary>& runs) {
  std::vector<std::string> devices;
  for (const auto& run : runs) {
    if (std::find(devices.begin(), devices.end(), run.device) == devices.end()) devices.push_back(run.device);
  }
  std::string note = "Peak memory: " + runs.front().peak_memory_kind + ". ";
  if (devices.size() == 1) return note + "Device: " + devices.front() + ".\n";
  note += "Devices differ between runs (";
  for (size_t i = 0; i < devices.size(); ++i) note += (i ? "; " : "") + devices[i];
  return note + "), so times and memory are only roughly comparable.\n";
}

std::string TrainSeconds(const RunSummary& run) {
  return Fixed(run.train_seconds_per_epoch, 2) + (run.train_epoch_extrapolated ? kExtrapolatedMark : "");
}

std::string Markdown(const std::vector<RunSummary>& runs, const std::vector<double>& tpme) {
  const std::vector<std::string> header = {"method",       "run",          "trainable params",
                                           "train s/epoch", "eval s/epoch", "peak memory (GiB)",
                                           "GPU util (%)",  "HR@10 (%)",    "NDCG@10 (%)",
                                           "TPME"};
  const std::vector<bool> right_aligned = {false, false, true, true, true, true, true, true, true, true};
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& run = runs[i];
    rows.push_back({MarkdownCell(run.label()), MarkdownCell(run.name), Thousands(run.trainable_parameters),
                    TrainSeconds(run), Fixed(run.eval_seconds_per_epoch, 2), Fixed(GiB(run.peak_memory_bytes), 2),
                    PercentOrDash(run.gpu_utilization, 1), PercentOrDash(run.test_hr10, 2),
                    PercentOrDash(run.test_ndcg10, 2), Fixed(tpme[i], 3)});
  }
  std::string markdown = "# Efficiency: training time, trainable parameters and peak memory\n\n" +
                         TpmeDefinition() + "\n" + DeviceNote(runs) + "\n" +
                         MarkdownTable(header, right_aligned, rows);
  const std::string extrapolation = ExtrapolationNote(runs);
  if (!extrapolation.empty()) markdown += "\n" + extrapolation;

  const auto baseline = std::find_if(runs.begin(), runs.end(),
                                     [](const RunSummary& run) { return run.is_baseline(); });
  if (baseline != runs.end() && runs.size() > 1) {
    markdown += "\nCompared with " + baseline->label() + " (" + baseline->name + "):\n\n";
    for (const auto& run : runs) {
      if (&run == &*baseline) continue;
      markdown += "- " + ComparisonWithBaseline(run, *baseline, DisplayName(run, runs)) + "\n";
    }
  }
  return markdown;
}

// ---- SVG ----

std::string XmlEscape(const std::string& text) {
  std::string escaped;
  for (const char c : text) {
    switch (c) {
      case '&': escaped += "&amp;"; break;
      case '<': escaped += "&lt;"; break;
      case '>': escaped += "&gt;"; break;
      case '"': escaped += "&quot;"; break;
      case '\'': escaped += "&apos;"; break;
      default: escaped += c;
    }
  }
  return escaped;
}

// Longer names would run into the bars.
std::string Shortened(const std::string& text, size_t max_characters) {
  if (DisplayWidth(text) <= max_characters) return text;
  std::string shortened;
  size_t characters = 0;
  for (const char c : text) {
    const bool starts_character = (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    if (starts_character && ++characters > max_characters - 1) break;
    shortened += c;
  }
  return shortened + "…";
}

// The smallest 1-2-5 step that covers max_value in at most `intervals` ticks.
double NiceStep(double max_value, int intervals) {
  if (max_value <= 0.0) return 1.0;
  const double raw = max_value / intervals;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double multiple : {1.0, 2.0, 5.0}) {
    if (multiple * magnitude >= raw) return multiple * magnitude;
  }
  return 10.0 * magnitude;
}

std::string Num(double value) { return Fixed(value, 1); }

std::string Text(double x, double y, const std::string& text, const std::string& attributes = "") {
  return "<text x=\"" + Num(x) + "\" y=\"" + Num(y) + "\"" + (attributes.empty() ? "" : " " + attributes) + ">" +
         XmlEscape(text) + "</text>\n";
}

std::string Line(double x1, double y1, double x2, double y2, const std::string& stroke) {
  return "<line x1=\"" + Num(x1) + "\" y1=\"" + Num(y1) + "\" x2=\"" + Num(x2) + "\" y2=\"" + Num(y2) +
         "\" stroke=\"" + stroke + "\"/>\n";
}

struct SvgLayout {
  static constexpr double kMargin = 20;
  static constexpr double kNameWidth = 230;     // method and run names, right-aligned, left of the bars
  static constexpr double kPanelGap = 36;
  static constexpr double kValueRoom = 70;      // right of the longest bar, for its value
  static constexpr double kPlotTop = 110;
  static constexpr double kRowHeight = 40;
  static constexpr double kBarHeight = 22;
  static constexpr size_t kMaxNameCharacters = 30;
};

struct BarPanel {
  std::string title;
  std::string axis_label;
  double width;                          // including kValueRoom
  double axis_max;                       // 0 for a 1-2-5 axis fitted to the values
  std::vector<double> values;
  std::vector<std::string> value_labels;
};

std::string RenderPanel(const BarPanel& panel, const std::vector<RunSummary>& runs, double left) {
  const double plot_width = panel.width - SvgLayout::kValueRoom;
  const double bottom = SvgLayout::kPlotTop + SvgLayout::kRowHeight * static_cast<double>(runs.size());
  double max_value = 0.0;
  for (const double value : panel.values) max_value = std::max(max_value, value);
  const double step = panel.axis_max > 0.0 ? panel.axis_max / 2.0 : NiceStep(max_value, 4);
  const double axis_max = panel.axis_max > 0.0 ? panel.axis_max : step * std::ceil(max_value / step - 1e-9);
  const auto x_of = [&](double value) { return left + plot_width * value / axis_max; };

  std::string svg = Text(left, SvgLayout::kPlotTop - 16, panel.title, "font-size=\"15\" font-weight=\"bold\"");
  for (int tick = 0; step * tick <= axis_max * (1.0 + 1e-9); ++tick) {
    const double value = step * tick;
    svg += Line(x_of(value), SvgLayout::kPlotTop, x_of(value), bottom, "#e0e0e0");
    char label[32];
    std::snprintf(label, sizeof(label), "%g", value);
    svg += Text(x_of(value), bottom + 18, label, "text-anchor=\"middle\" fill=\"#444\"");
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    const double top = SvgLayout::kPlotTop + SvgLayout::kRowHeight * static_cast<double>(i) +
                       (SvgLayout::kRowHeight - SvgLayout::kBarHeight) / 2.0;
    const double width = x_of(panel.values[i]) - left;
    svg += "<rect x=\"" + Num(left) + "\" y=\"" + Num(top) + "\" width=\"" + Num(width) + "\" height=\"" +
           Num(SvgLayout::kBarHeight) + "\" fill=\"" + BarColor(KnownMethod(runs[i].method)) + "\"/>\n";
    svg += Text(left + width + 5, top + SvgLayout::kBarHeight / 2.0 + 5, panel.value_labels[i]);
  }
  svg += Line(left, SvgLayout::kPlotTop, left, bottom, "#333");
  svg += Line(left, bottom, left + plot_width, bottom, "#333");
  svg += Text(left + plot_width / 2.0, bottom + 40, panel.axis_label, "text-anchor=\"middle\"");
  return svg;
}

std::string Svg(const std::vector<RunSummary>& runs, const std::vector<double>& tpme) {
  BarPanel time{"Training time per epoch", "seconds per training epoch", 340, 0, {}, {}};
  BarPanel memory{"Peak memory", "GiB (" + runs.front().peak_memory_kind + ")", 340, 0, {}, {}};
  BarPanel score{"TPME (lower is better)", "TPME within this set", 220, 1.0, {}, {}};
  for (size_t i = 0; i < runs.size(); ++i) {
    time.values.push_back(runs[i].train_seconds_per_epoch);
    time.value_labels.push_back(Compact(runs[i].train_seconds_per_epoch) +
                                (runs[i].train_epoch_extrapolated ? kExtrapolatedMark : ""));
    memory.values.push_back(GiB(runs[i].peak_memory_bytes));
    memory.value_labels.push_back(Fixed(GiB(runs[i].peak_memory_bytes), 2));
    score.values.push_back(tpme[i]);
    score.value_labels.push_back(Fixed(tpme[i], 3));
  }

  const double bottom = SvgLayout::kPlotTop + SvgLayout::kRowHeight * static_cast<double>(runs.size());
  const bool any_extrapolated =
      std::any_of(runs.begin(), runs.end(), [](const RunSummary& run) { return run.train_epoch_extrapolated; });
  const double height = bottom + 64 + (any_extrapolated ? 20 : 0);
  const double time_left = SvgLayout::kMargin + SvgLayout::kNameWidth;
  const double memory_left = time_left + time.width + SvgLayout::kPanelGap;
  const double score_left = memory_left + memory.width + SvgLayout::kPanelGap;
  const double width = score_left + score.width + SvgLayout::kMargin;

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << Num(width) << "\" height=\"" << Num(height)
      << "\" viewBox=\"0 0 " << Num(width) << " " << Num(height)
      << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
      << "<title>Efficiency: training time, peak memory and TPME</title>\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << Text(SvgLayout::kMargin, 32, "Efficiency: training time, peak memory and TPME",
              "font-size=\"20\" font-weight=\"bold\"")
      << Text(SvgLayout::kMargin, 56, TpmeDefinition(), "fill=\"#555\"");
  for (size_t i = 0; i < runs.size(); ++i) {
    const double middle = SvgLayout::kPlotTop + SvgLayout::kRowHeight * (static_cast<double>(i) + 0.5);
    const double name_right = time_left - 12;
    svg << Text(name_right, middle - 2, Shortened(runs[i].label(), SvgLayout::kMaxNameCharacters),
                "text-anchor=\"end\" font-weight=\"bold\"")
        << Text(name_right, middle + 13, Shortened(runs[i].name, SvgLayout::kMaxNameCharacters),
                "text-anchor=\"end\" font-size=\"11\" fill=\"#666\"");
  }
  svg << RenderPanel(time, runs, time_left) << RenderPanel(memory, runs, memory_left)
      << RenderPanel(score, runs, score_left);
  if (any_extrapolated) {
    svg << Text(SvgLayout::kMargin, height - 12,
                std::string(kExtrapolatedMark) + " training time extrapolated from part of an epoch",
                "font-size=\"11\" fill=\"#555\"");
  }
  svg << "</svg>\n";
  return svg.str();
}

// ---- output ----

// A reader sees the old file or the new one (temp, fsync, rename, fsync folder).
void WriteTextAtomically(const Path& path, const std::string& text) { data::WriteFileAtomically(path, text); }

// A metric of one epoch's record in percent, or a dash where K = 10 was not evaluated.
std::string MetricAt10(const std::optional<train::RankingMetrics>& metrics, bool ndcg) {
  if (!metrics || std::find(metrics->ks.begin(), metrics->ks.end(), 10) == metrics->ks.end()) return kDash;
  return Fixed(100.0 * (ndcg ? metrics->ndcg(10) : metrics->hr(10)), 2);
}

}  // namespace

void ReportMetrics(const std::vector<Path>& run_dirs, std::ostream& out) {
  if (run_dirs.empty()) throw std::runtime_error("report metrics: no runs given; pass one or more run directories");
  const std::vector<std::string> header = {"epoch",          "train loss",      "valid HR@10 (%)", "valid NDCG@10 (%)",
                                           "test HR@10 (%)", "test NDCG@10 (%)", "train s",         "eval s"};
  const std::vector<bool> right_aligned = {false, true, true, true, true, true, true, true};
  for (const auto& dir : run_dirs) {
    const Path path = dir / "metrics.jsonl";
    const auto metrics = train::ReadMetricsFile(path);
    std::vector<std::vector<std::string>> rows;
    for (const auto& record : metrics.records) {
      rows.push_back({std::to_string(record.epoch) + (record.best ? " (best)" : ""), Fixed(record.train_loss, 4),
                      MetricAt10(record.valid, false), MetricAt10(record.valid, true), MetricAt10(record.test, false),
                      MetricAt10(record.test, true), Fixed(record.train_seconds, 2), Fixed(record.eval_seconds, 2)});
    }
    out << "## " << dir.string() << "\n\n" << MarkdownTable(header, right_aligned, rows);
    if (metrics.torn_last_line > 0) {
      out << "\nNote: " << path.string() << ":" << metrics.torn_last_line
          << ": incomplete last line (the run was stopped while appending it); skipped.\n";
    }
    out << "\n";
  }
}

void ReportEfficiency(const std::vector<Path>& run_dirs, const Path& out_dir, std::ostream& out) {
  if (run_dirs.empty()) {
    throw std::runtime_error("report efficiency: no runs given; pass one or more run directories, each with a "
                             "summary.json (e.g. iisan report efficiency runs/fft runs/iisan)");
  }
  CheckDistinct(run_dirs);
  std::vector<RunSummary> runs;
  for (const auto& dir : run_dirs) runs.push_back(ReadSummary(dir));
  CheckSameMemoryKind(runs);

  std::vector<train::EfficiencyInput> inputs;
  for (const auto& run : runs) {
    inputs.push_back({run.dir.string(), run.train_seconds_per_epoch, run.trainable_parameters,
                      run.peak_memory_bytes});
  }
  const auto tpme = train::Tpme(inputs);
  const std::string markdown = Markdown(runs, tpme);
  const std::string svg = Svg(runs, tpme);

  std::filesystem::create_directories(out_dir);
  const Path markdown_path = out_dir / "efficiency.md";
  const Path svg_path = out_dir / "efficiency.svg";
  WriteTextAtomically(markdown_path, markdown);
  WriteTextAtomically(svg_path, svg);
  out << markdown << "\nwrote " << markdown_path.string() << " and " << svg_path.string() << "\n";
}

}  // namespace iisan::launcher
