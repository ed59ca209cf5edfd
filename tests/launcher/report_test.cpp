// `iisan report efficiency` on hand-written run directories: the worked TPME example of
// IISAN.md §7.1 end to end, and inputs that must fail before anything is written; `iisan report
// metrics` on metrics.jsonl files, torn by a kill, damaged, or fuzzed.
#include "launcher/report.h"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/train/run_summary.h"
#include "launcher/run_dir.h"
#include "tests/fuzz_mutator.h"

namespace iisan::launcher {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// A fresh folder per test, under GoogleTest's temporary directory.
fs::path Fresh() {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = fs::path(::testing::TempDir()) / ("report_" + std::string(test->name()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Json Summary(const std::string& method, const std::string& name, int64_t parameters, double seconds,
             double memory_gib) {
  return {{"method", method},
          {"name", name},
          {"trainable_parameters", parameters},
          {"train_seconds_per_epoch", seconds},
          {"eval_seconds_per_epoch", seconds / 10.0},
          {"peak_memory_bytes", memory_gib * kGiB},
          {"peak_memory_kind", "cuda allocator peak"},
          {"device", "NVIDIA H200"},
          {"test", {{"HR@10", 0.1234}, {"NDCG@10", 0.0567}, {"users", 1000}}}};
}

fs::path WriteRun(const fs::path& root, const std::string& dir_name, const Json& summary) {
  const auto dir = root / dir_name;
  fs::create_directories(dir);
  std::ofstream(dir / "summary.json") << summary.dump(2);
  return dir;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The worked example: {FFT, Adapter, LoRA, IISAN-cached} with T = {443, 350, 380, 22} s and
// M = {47, 37, 39, 3} (GiB here; TPME does not depend on the unit).
std::vector<fs::path> WorkedExampleRuns(const fs::path& root) {
  auto fft = Summary("fft", "fft-sci", 194897216, 443, 47);
  fft["gpu_utilization"] = 0.93;
  auto iisan = Summary("iisan", "iisan-sci", 4113877, 22, 3);
  iisan["gpu_utilization"] = nullptr;
  iisan["train_epoch_extrapolated"] = true;
  iisan["train_steps_measured"] = 50;
  iisan["train_steps_per_epoch"] = 1200;
  return {WriteRun(root, "fft", fft), WriteRun(root, "adapter", Summary("adapter", "adapter-sci", 4965440, 350, 37)),
          WriteRun(root, "lora", Summary("lora", "lora-sci", 833600, 380, 39)), WriteRun(root, "iisan", iisan)};
}

std::string ErrorOf(const std::vector<fs::path>& runs, const fs::path& out_dir) {
  std::ostringstream out;
  try {
    ReportEfficiency(runs, out_dir, out);
  } catch (const std::runtime_error& error) {
    EXPECT_FALSE(fs::exists(out_dir)) << "an error must leave nothing behind";
    EXPECT_TRUE(out.str().empty()) << out.str();
    return error.what();
  }
  ADD_FAILURE() << "expected std::runtime_error";
  return "";
}

// The cells of each body row of the markdown table, trimmed.
std::vector<std::vector<std::string>> TableRows(const std::string& markdown) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(markdown);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| ", 0) != 0 || line.rfind("| method ", 0) == 0 || line.rfind("| epoch ", 0) == 0) continue;
    std::vector<std::string> cells;
    std::istringstream parts(line.substr(1));
    for (std::string cell; std::getline(parts, cell, '|');) {
      cell.erase(0, cell.find_first_not_of(' '));
      cell.erase(cell.find_last_not_of(' ') + 1);
      cells.push_back(cell);
    }
    rows.push_back(cells);
  }
  return rows;
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ReportTest, WorkedExampleTableAndChart) {
  const auto root = Fresh();
  const auto out_dir = root / "report";
  std::ostringstream out;
  ReportEfficiency(WorkedExampleRuns(root), out_dir, out);

  const auto markdown = ReadText(out_dir / "efficiency.md");
  EXPECT_TRUE(Contains(out.str(), markdown)) << out.str();
  EXPECT_TRUE(Contains(markdown, "0.45·time + 0.1·trainable params + 0.45·peak memory")) << markdown;
  EXPECT_TRUE(Contains(markdown, "Peak memory: cuda allocator peak. Device: NVIDIA H200.")) << markdown;

  const auto rows = TableRows(markdown);
  ASSERT_EQ(rows.size(), 4u) << markdown;
  // In command-line order. TPME: FFT 1.000, Adapter 0.7005, LoRA 0.751, IISAN 0.0017 → 0.002.
  using Row = std::vector<std::string>;
  EXPECT_EQ(rows[0], (Row{"FFT", "fft-sci", "194,897,216", "443.00", "44.30", "47.00", "93.0", "12.34", "5.67",
                          "1.000"}));
  EXPECT_EQ(rows[1][0], "Adapter");
  EXPECT_NEAR(std::stod(rows[1][9]), 0.70045, 6e-4);  // printed as 0.700 or 0.701
  EXPECT_EQ(rows[2], (Row{"LoRA", "lora-sci", "833,600", "380.00", "38.00", "39.00", "–", "12.34", "5.67",
                          "0.751"}));
  EXPECT_EQ(rows[3], (Row{"IISAN (cached)", "iisan-sci", "4,113,877", "22.00*", "2.20", "3.00", "–", "12.34",
                          "5.67", "0.002"}));
  EXPECT_TRUE(Contains(markdown, "IISAN (cached) (iisan-sci), 50 of 1,200 steps timed")) << markdown;

  // 443 / 22 = 20.1, 47 / 3 = 15.7.
  EXPECT_TRUE(Contains(markdown, "IISAN (cached) is 20.1× faster per training epoch and uses 1/15.7 of FFT's "
                                 "peak memory."))
      << markdown;
  EXPECT_TRUE(Contains(markdown, "Adapter is 1.3× faster per training epoch and uses 1/1.3 of FFT's")) << markdown;
  EXPECT_FALSE(Contains(markdown, "FFT is ")) << markdown;

  const auto svg = ReadText(out_dir / "efficiency.svg");
  EXPECT_TRUE(svg.rfind("<svg", 0) == 0 || svg.rfind("<?xml", 0) == 0) << svg.substr(0, 80);
  EXPECT_TRUE(Contains(svg, "</svg>"));
  for (const char* label : {"FFT", "Adapter", "LoRA", "IISAN (cached)", "fft-sci", "iisan-sci", "1.000", "0.751"}) {
    EXPECT_TRUE(Contains(svg, label)) << label;
  }
  EXPECT_FALSE(fs::exists(out_dir / "efficiency.md.tmp"));
  EXPECT_FALSE(fs::exists(out_dir / "efficiency.svg.tmp"));
}

TEST(ReportTest, UnknownMethodShownAsIsAndEscaped) {
  const auto root = Fresh();
  const auto runs = std::vector<fs::path>{WriteRun(root, "a", Summary("bitfit", "bitfit <sci>", 100000, 300, 30)),
                                          WriteRun(root, "b", Summary("prefix & co", "p|q", 200000, 200, 20))};
  std::ostringstream out;
  ReportEfficiency(runs, root / "report", out);
  const auto markdown = ReadText(root / "report/efficiency.md");
  EXPECT_TRUE(Contains(markdown, "| BitFit ")) << markdown;
  EXPECT_TRUE(Contains(markdown, "| prefix & co ")) << markdown;
  EXPECT_TRUE(Contains(markdown, "| p\\|q ")) << "a pipe in a name must not split the cell: " << markdown;
  EXPECT_FALSE(Contains(markdown, "faster")) << "no FFT run, so no ratios: " << markdown;
  const auto svg = ReadText(root / "report/efficiency.svg");
  EXPECT_TRUE(Contains(svg, "prefix &amp; co")) << svg;
  EXPECT_TRUE(Contains(svg, "bitfit &lt;sci&gt;")) << svg;
  EXPECT_FALSE(Contains(svg, "<sci>"));
}

TEST(ReportTest, WritesIntoAnExistingFolderAndReplacesAnOldReport) {
  const auto root = Fresh();
  const auto runs = std::vector<fs::path>{WriteRun(root, "a", Summary("fft", "x", 10, 3, 2))};
  std::ofstream(root / "efficiency.md") << "old";
  std::ostringstream out;
  ReportEfficiency(runs, root, out);
  EXPECT_TRUE(Contains(ReadText(root / "efficiency.md"), "| FFT "));
  const auto rows = TableRows(ReadText(root / "efficiency.md"));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].back(), "0.000") << "a single run scores 0";
}

TEST(ReportTest, NoRunsIsAnError) {
  const auto root = Fresh();
  EXPECT_TRUE(Contains(ErrorOf({}, root / "report"), "pass one or more run directories"));
}

TEST(ReportTest, MissingSummaryNamesThePathAndSaysTheRunMayNotHaveFinished) {
  const auto root = Fresh();
  auto runs = WorkedExampleRuns(root);
  fs::create_directories(root / "unfinished");
  runs.push_back(root / "unfinished");
  const auto message = ErrorOf(runs, root / "report");
  EXPECT_TRUE(Contains(message, (root / "unfinished" / "summary.json").string())) << message;
  EXPECT_TRUE(Contains(message, "may not have finished")) << message;
}

TEST(ReportTest, MissingFieldNamesTheFileAndTheField) {
  const auto root = Fresh();
  auto summary = Summary("lora", "lora-sci", 833600, 380, 39);
  summary.erase("peak_memory_bytes");
  const auto runs = std::vector<fs::path>{WriteRun(root, "fft", Summary("fft", "f", 10, 3, 2)),
                                          WriteRun(root, "lora", summary)};
  const auto message = ErrorOf(runs, root / "report");
  EXPECT_TRUE(Contains(message, (root / "lora" / "summary.json").string())) << message;
  EXPECT_TRUE(Contains(message, "\"peak_memory_bytes\" is missing")) << message;
}

TEST(ReportTest, WronglyTypedFieldNamesTheFieldAndTheExpectedType) {
  const auto root = Fresh();
  auto summary = Summary("lora", "lora-sci", 833600, 380, 39);
  summary["trainable_parameters"] = "833,600";
  auto message = ErrorOf({WriteRun(root, "lora", summary)}, root / "report");
  EXPECT_TRUE(Contains(message, "\"trainable_parameters\" must be an integer")) << message;

  summary = Summary("lora", "lora-sci", 833600, 380, 39);
  summary["test"]["HR@10"] = "12%";
  message = ErrorOf({WriteRun(root, "lora", summary)}, root / "report");
  EXPECT_TRUE(Contains(message, "\"test.HR@10\" must be a number")) << message;

  summary = Summary("lora", "lora-sci", 833600, 380, 39);
  summary["gpu_utilization"] = 87;
  message = ErrorOf({WriteRun(root, "lora", summary)}, root / "report");
  EXPECT_TRUE(Contains(message, "\"gpu_utilization\" must be a fraction")) << message;
}

TEST(ReportTest, MixedMemoryKindsNameBothRunsAndKinds) {
  const auto root = Fresh();
  auto host = Summary("iisan", "iisan-cpu", 4113877, 22, 3);
  host["peak_memory_kind"] = "host peak RSS";
  const auto runs = std::vector<fs::path>{WriteRun(root, "fft", Summary("fft", "f", 10, 3, 2)),
                                          WriteRun(root, "iisan", host)};
  const auto message = ErrorOf(runs, root / "report");
  EXPECT_TRUE(Contains(message, (root / "fft").string()) && Contains(message, (root / "iisan").string())) << message;
  EXPECT_TRUE(Contains(message, "cuda allocator peak") && Contains(message, "host peak RSS")) << message;
}

TEST(ReportTest, SameRunTwiceIsAnError) {
  const auto root = Fresh();
  const auto dir = WriteRun(root, "fft", Summary("fft", "f", 10, 3, 2));
  const auto other = WriteRun(root, "lora", Summary("lora", "l", 5, 2, 1));
  EXPECT_TRUE(Contains(ErrorOf({dir, other, dir}, root / "report"), "given twice"));
  EXPECT_TRUE(Contains(ErrorOf({dir, other, dir / ""}, root / "report"), "given twice"));
  EXPECT_TRUE(Contains(ErrorOf({dir, other / ".." / "fft"}, root / "report"), "given twice"));
}

// ---- report metrics: metrics.jsonl, torn last lines ----

std::string EpochLine(int epoch, double loss, bool best) {
  train::EpochRecord record;
  record.epoch = epoch;
  record.train_loss = loss;
  record.train_seconds = 1.5 * epoch;
  record.eval_seconds = 0.25;
  record.valid = train::RankingMetrics({5, 10});
  record.valid.hit_sum = {2, 4};
  record.valid.ndcg_sum = {1.0, 1.5};
  record.valid.users = 16;
  if (best) record.test = record.valid;
  record.best = best;
  return record.ToJson().dump() + "\n";
}

std::string MetricsReport(const fs::path& run) {
  std::ostringstream out;
  ReportMetrics({run}, out);
  return out.str();
}

TEST(ReportMetricsTest, EpochsOfARunAsATable) {
  const auto run = Fresh() / "run";
  fs::create_directories(run);
  std::ofstream(run / "metrics.jsonl") << EpochLine(1, 3.5, true) << "\n" << EpochLine(2, 3.25, false);
  const std::string report = MetricsReport(run);
  const auto rows = TableRows(report);
  ASSERT_EQ(rows.size(), 2u) << report;
  using Row = std::vector<std::string>;
  EXPECT_EQ(rows[0], (Row{"1 (best)", "3.5000", "25.00", "9.38", "25.00", "9.38", "1.50", "0.25"}));
  EXPECT_EQ(rows[1], (Row{"2", "3.2500", "25.00", "9.38", "–", "–", "3.00", "0.25"}));
  EXPECT_FALSE(Contains(report, "incomplete")) << report;
}

// A kill while a line is appended leaves it cut short: the report shows the epochs before it
// and names the file and line it skipped.
TEST(ReportMetricsTest, ATornLastLineIsSkippedAndNamed) {
  const auto run = Fresh() / "run";
  fs::create_directories(run);
  const std::string third = EpochLine(3, 3.0, false);
  for (const size_t cut : {size_t{1}, third.size() / 2, third.size() - 2}) {
    std::ofstream(run / "metrics.jsonl", std::ios::trunc)
        << EpochLine(1, 3.5, true) << EpochLine(2, 3.25, false) << third.substr(0, cut);
    const std::string report = MetricsReport(run);
    EXPECT_EQ(TableRows(report).size(), 2u) << report;
    EXPECT_TRUE(Contains(report, "Note: " + (run / "metrics.jsonl").string() + ":3: incomplete last line")) << report;
    const auto metrics = train::ReadMetricsFile(run / "metrics.jsonl");
    EXPECT_EQ(metrics.records.size(), 2u);
    EXPECT_EQ(metrics.torn_last_line, 3);
  }
  // Cut just before its newline, the line is whole: nothing is skipped.
  std::ofstream(run / "metrics.jsonl", std::ios::trunc) << EpochLine(1, 3.5, true) << third.substr(0, third.size() - 1);
  EXPECT_EQ(train::ReadMetricsFile(run / "metrics.jsonl").records.size(), 2u);
  EXPECT_EQ(train::ReadMetricsFile(run / "metrics.jsonl").torn_last_line, 0);
}

// Lines are appended whole and synced: a damaged line before the last is corruption, not a kill.
TEST(ReportMetricsTest, ADamagedLineBeforeTheLastIsAnErrorNamingFileAndLine) {
  const auto run = Fresh() / "run";
  fs::create_directories(run);
  std::ofstream(run / "metrics.jsonl") << EpochLine(1, 3.5, true) << "{\"epoch\": 2, \"train_lo\n"
                                       << EpochLine(3, 3.0, false);
  std::ostringstream out;
  try {
    ReportMetrics({run}, out);
    FAIL() << "a damaged middle line was accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(Contains(error.what(), (run / "metrics.jsonl").string() + ":2")) << error.what();
  }
  std::ofstream(run / "metrics.jsonl", std::ios::trunc) << EpochLine(1, 3.5, true) << "{\"epoch\": 0}\n";
  try {
    MetricsReport(run);
    FAIL() << "a record of epoch 0 was accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(Contains(error.what(), "metrics.jsonl:2: field \"epoch\"")) << error.what();
  }
  EXPECT_THROW(MetricsReport(Fresh() / "missing"), std::runtime_error);
}

// The run directory's writer and reader together: lines appended (and synced) read back in order;
// a resumed run's TruncateMetrics drops a torn last line.
TEST(ReportMetricsTest, AppendedLinesReadBackAndResumingDropsATornOne) {
  const auto root = Fresh();
  auto run = RunDirectory::Create(root, "run", {{"name", "run"}});
  for (int epoch = 1; epoch <= 3; ++epoch) {
    run.AppendMetrics(nlohmann::ordered_json::parse(EpochLine(epoch, 4.0 - epoch, epoch == 1)));
  }
  const auto path = run.path() / "metrics.jsonl";
  EXPECT_EQ(train::ReadMetricsFile(path).records.size(), 3u);
  std::ofstream(path, std::ios::app) << EpochLine(4, 0.5, false).substr(0, 20);
  EXPECT_EQ(train::ReadMetricsFile(path).torn_last_line, 4);
  run.TruncateMetrics(2);
  const auto kept = train::ReadMetricsFile(path);
  ASSERT_EQ(kept.records.size(), 2u);
  EXPECT_EQ(kept.records.back().epoch, 2);
  EXPECT_EQ(kept.torn_last_line, 0);
  run.AppendMetrics(nlohmann::ordered_json::parse(EpochLine(3, 1.0, false)));
  EXPECT_EQ(train::ReadMetricsFile(path).records.size(), 3u);
}

// Damaged metrics files (tests/fuzz_mutator.h): read, or an std::runtime_error naming the file.
TEST(ReportMetricsTest, DamagedMetricsFilesReadOrNameTheFile) {
  const auto run = Fresh() / "run";
  fs::create_directories(run);
  const auto path = run / "metrics.jsonl";
  iisan::testing::FuzzMutator mutator(
      701, {EpochLine(1, 3.5, true) + EpochLine(2, 3.25, false) + EpochLine(3, 3.0, false), EpochLine(1, 2.0, false)},
      {"\n", "{", "}", "\"epoch\"", "\"valid\"", "\"HR@10\"", ":", ","});
  const auto outcome = iisan::testing::RunFuzz<std::runtime_error>(
      mutator, 1500,
      [&](const std::string& text) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
        const auto metrics = train::ReadMetricsFile(path);
        iisan::testing::FuzzRequire(metrics.torn_last_line == 0 || !text.ends_with('\n'),
                                    "only a line without its newline is taken for a torn one");
        std::ostringstream out;
        ReportMetrics({run}, out);
      },
      [&](const std::runtime_error& error) {
        return Contains(error.what(), path.string()) ? "" : "the error does not name the file: " + std::string(error.what());
      });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

}  // namespace
}  // namespace iisan::launcher
