// Tokenizer parity with Hugging Face transformers' BertTokenizer (bert-base-uncased vocab,
// do_lower_case, max_length 30): reference ids for every Amazon Scientific title and for
// adversarial strings, produced by tools/make_parity_fixtures.py and committed under
// tests/fixtures/tokenizer (see versions.json there for the library versions).
#include <zlib.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/data/tokenizer.h"

namespace iisan::data {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(IISAN_SOURCE_DIR) / "tests/fixtures/tokenizer";

std::string ReadGzip(const std::filesystem::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error(path.string() + ": cannot open");
  std::string out;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  gzclose(file);
  return out;
}

TEST(TokenizerParityTest, EveryScientificTitleMatchesTransformers) {
  const auto tokenizer = WordPieceTokenizer::FromVocabFile(kFixtures / "vocab.txt");
  std::istringstream lines(ReadGzip(kFixtures / "scientific_ids.tsv.gz"));
  int checked = 0, mismatches = 0;
  for (std::string line; std::getline(lines, line);) {
    const auto tab = line.rfind('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    std::vector<int32_t> expected;
    std::istringstream ids(line.substr(tab + 1));
    for (int32_t id; ids >> id;) expected.push_back(id);
    const auto title = line.substr(0, tab);
    auto got = tokenizer.Encode(title, 30).input_ids;
    got.erase(std::find(got.begin(), got.end(), 0), got.end());
    ++checked;
    if (got != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "title: " << title << "\nexpected " << ::testing::PrintToString(expected)
                    << "\n     got " << ::testing::PrintToString(got);
    }
  }
  EXPECT_EQ(checked, 20825);
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerParityTest, AdversarialStringsMatchTransformers) {
  const auto tokenizer = WordPieceTokenizer::FromVocabFile(kFixtures / "vocab.txt");
  std::ifstream in(kFixtures / "adversarial.json");
  const auto cases = nlohmann::json::parse(in);
  ASSERT_GT(cases.size(), 20u);
  for (const auto& item : cases) {
    const auto text = item["text"].get<std::string>();
    const auto expected = item["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer.Encode(text, 30).input_ids, expected) << "text: " << nlohmann::json(text).dump();
  }
}

}  // namespace
}  // namespace iisan::data
