// WordPieceTokenizer against hand-checked bert-base-uncased ids (id = line number - 1 of
// vocab.txt): accents, punctuation, HTML entities, CJK, control and space characters, special
// tokens, [UNK] for long or unknown words, truncation and padding; plus the WordPiece algorithm
// and vocabulary errors on a tiny vocabulary that needs no shared data.
#include "core/data/tokenizer.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/core/data/test_files.h"

namespace iisan::data {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::InputErrorOf;
using testing::TempDir;
using testing::WriteFile;

using Ids = std::vector<int32_t>;
using Tokens = std::vector<std::string>;

constexpr int32_t kCls = 101, kSep = 102, kUnk = 100;

// [CLS] ids... [SEP] padded with 0 to length.
Ids Framed(Ids ids, size_t length = 30) {
  ids.insert(ids.begin(), kCls);
  ids.push_back(kSep);
  ids.resize(length, 0);
  return ids;
}

class BertTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path vocab = testing::SharedDataDir() / "bert-base-uncased" / "vocab.txt";
    if (fs::exists(vocab))
      tokenizer_ = new WordPieceTokenizer(WordPieceTokenizer::FromVocabFile(vocab));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "bert-base-uncased/vocab.txt not found under " << testing::SharedDataDir()
                   << "; set IISAN_SHARED_DATA to the shared data folder to run this test";
    }
  }
  Ids Ids30(std::string_view text) const { return tokenizer_->Encode(text).input_ids; }

  static const WordPieceTokenizer* tokenizer_;
};

const WordPieceTokenizer* BertTokenizerTest::tokenizer_ = nullptr;

TEST_F(BertTokenizerTest, VocabularySize) { EXPECT_EQ(tokenizer_->vocab_size(), 30522); }

TEST_F(BertTokenizerTest, LowerCasesAndStripsAccents) {
  EXPECT_EQ(tokenizer_->Tokenize("Café Naïve"), (Tokens{"cafe", "naive"}));
  const TokenizedText encoded = tokenizer_->Encode("Café Naïve");
  EXPECT_EQ(encoded.input_ids, Framed({7668, 15743}));
  EXPECT_EQ(encoded.attention_mask, (Ids{1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(Ids30("Ångström résumé über"), Framed({17076, 15687, 13746, 19169}));
  // A decomposed accent (e + U+0301) is stripped like a precomposed one.
  EXPECT_EQ(Ids30("e\xCC\x81 combining"), Framed({1041, 11566}));
  // Python's "İ".lower() is "i" + U+0307, whose mark is then stripped.
  EXPECT_EQ(Ids30("İstanbul"), Framed({9960}));
  // Lower-casing is per character, as in PreTrainedTokenizer.tokenize: no final sigma.
  EXPECT_EQ(tokenizer_->Tokenize("ΟΔΟΣ"), (Tokens{"ο", "##δ", "##ο", "##σ"}));
  EXPECT_EQ(Ids30("ΟΔΟΣ"), Framed({1169, 29722, 29730, 29733}));
}

TEST_F(BertTokenizerTest, SplitsPunctuation) {
  EXPECT_EQ(Ids30("Hello, World!"), Framed({7592, 1010, 2088, 999}));
  EXPECT_EQ(Ids30("naïve—café"), Framed({15743, 1517, 7668}));  // em dash is Unicode Pd
}

TEST_F(BertTokenizerTest, KeepsHtmlEntitiesRaw) {
  // Amazon titles carry "&amp;"; like the reference, nothing unescapes it.
  EXPECT_EQ(tokenizer_->Tokenize("Nuts &amp; Bolts"), (Tokens{"nuts", "&", "amp", ";", "bolts"}));
  EXPECT_EQ(Ids30("Nuts &amp; Bolts"), Framed({12264, 1004, 23713, 1025, 19947}));
}

TEST_F(BertTokenizerTest, EmptyTextIsClsSep) {
  const TokenizedText encoded = tokenizer_->Encode("");
  EXPECT_EQ(encoded.input_ids, Framed({}));
  EXPECT_EQ(encoded.attention_mask[0], 1);
  EXPECT_EQ(encoded.attention_mask[1], 1);
  EXPECT_EQ(encoded.attention_mask[2], 0);
  EXPECT_EQ(Ids30(" \t\n "), Framed({}));
}

TEST_F(BertTokenizerTest, WordPiecesAndUnknowns) {
  EXPECT_EQ(tokenizer_->Tokenize("unaffable"), (Tokens{"una", "##ffa", "##ble"}));
  EXPECT_EQ(Ids30("unaffable"), Framed({14477, 20961, 3468}));
  EXPECT_EQ(Ids30("☃ snow"), Framed({kUnk, 4586}));
  EXPECT_EQ(Ids30("ＡＢＣ"), Framed({kUnk}));  // full-width letters: no NFKC in BERT
}

TEST_F(BertTokenizerTest, WordsLongerThan100CharactersAreUnknown) {
  EXPECT_EQ(Ids30(std::string(101, 'a') + " ok"), Framed({kUnk, 7929}));
  const Tokens pieces = tokenizer_->Tokenize(std::string(100, 'a'));
  ASSERT_EQ(pieces.size(), 50u);  // "aaa", 48 x "##aa", "##a"
  EXPECT_EQ(pieces.front(), "aaa");
  EXPECT_EQ(pieces[1], "##aa");
  EXPECT_EQ(pieces.back(), "##a");
}

TEST_F(BertTokenizerTest, TruncatesSoThatSepIsLast) {
  std::string title;
  for (int i = 0; i < 40; ++i) title += "microscope ";
  const TokenizedText encoded = tokenizer_->Encode(title);
  ASSERT_EQ(encoded.input_ids.size(), 30u);
  EXPECT_EQ(encoded.input_ids.front(), kCls);
  EXPECT_EQ(encoded.input_ids[28], 24635);
  EXPECT_EQ(encoded.input_ids.back(), kSep);
  EXPECT_EQ(encoded.attention_mask, Ids(30, 1));
  EXPECT_EQ(tokenizer_->Encode("Hello, World!", 5).input_ids, (Ids{kCls, 7592, 1010, 2088, kSep}));
  EXPECT_EQ(tokenizer_->Encode("Hello, World!", 2).input_ids, (Ids{kCls, kSep}));
  EXPECT_THROW(tokenizer_->Encode("x", 1), std::invalid_argument);
}

TEST_F(BertTokenizerTest, CjkIdeographsBecomeWords) {
  EXPECT_EQ(Ids30("中文abc"), Framed({1746, 1861, 5925}));
}

TEST_F(BertTokenizerTest, CleansControlFormatAndSpaceCharacters) {
  EXPECT_EQ(Ids30(std::string("a\0b\tc", 5)), Framed({11113, 1039}));  // NUL dropped, tab splits
  EXPECT_EQ(Ids30("\u00AD soft\u00ADhyphen"), Framed({3730, 10536, 8458, 2368}));    // Cf dropped
  EXPECT_EQ(Ids30("\u3000full\u3000width\u00A0space"), Framed({2440, 9381, 2686}));  // Zs
  EXPECT_EQ(Ids30("x\u2028y"), Framed({1060, 1061}));  // Python's str.split() splits on Zl
  EXPECT_EQ(Ids30("ab\xFF"
                  "c"),
            Framed({5925}));  // invalid UTF-8 is dropped like U+FFFD
}

TEST_F(BertTokenizerTest, HangulDecomposesToJamo) {
  EXPECT_EQ(Ids30("한국어"), Framed({1469, 30006, 30021, 29991, 30014, 30020, 29999, 30008}));
}

TEST_F(BertTokenizerTest, LiteralSpecialTokensAreKept) {
  EXPECT_EQ(Ids30("hello[SEP]world"), Framed({7592, kSep, 2088}));
  EXPECT_EQ(Ids30("Hello [CLS] [MASK] [PAD] [UNK]"), Framed({7592, kCls, 103, 0, kUnk}));
  EXPECT_EQ(tokenizer_->Encode("[PAD]").attention_mask[1], 1);
  EXPECT_EQ(Ids30("[sep]"), Framed({1031, 19802, 1033}));  // only the exact spelling is special
}

TEST_F(BertTokenizerTest, AmazonTitle) {
  EXPECT_EQ(tokenizer_->Tokenize("5PCS Nema17 Stepper Motor 2A 64oz.in 40mm"),
            (Tokens{"5", "##pc", "##s", "ne", "##ma", "##17", "steppe", "##r", "motor", "2a", "64",
                    "##oz", ".", "in", "40", "##mm"}));
  EXPECT_EQ(Ids30("5PCS Nema17 Stepper Motor 2A 64oz.in 40mm"),
            Framed({1019, 15042, 2015, 11265, 2863, 16576, 29096, 2099, 5013, 23409, 4185, 18153,
                    1012, 1999, 2871, 7382}));
}

class TinyVocabTest : public ::testing::Test {
 protected:
  WordPieceTokenizer Load(std::string_view vocab, bool lower_case = true) {
    WriteFile(path_, vocab);
    return WordPieceTokenizer::FromVocabFile(path_, lower_case);
  }

  TempDir dir_;
  fs::path path_ = dir_.path() / "vocab.txt";
};

constexpr char kTinyVocab[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nuna\n##ff\nhello\n,\n##a\n";

TEST_F(TinyVocabTest, GreedyLongestMatchFirst) {
  const WordPieceTokenizer tokenizer = Load(kTinyVocab);
  EXPECT_EQ(tokenizer.vocab_size(), 13);
  // "una" beats "un" even though "un ##aff ##able" would also cover the word.
  EXPECT_EQ(tokenizer.Encode("unaffable", 6).input_ids, (Ids{2, 8, 9, 7, 3, 0}));
  // A word that cannot be covered is one [UNK], not a partial match.
  EXPECT_EQ(tokenizer.Encode("unx, hello", 6).input_ids, (Ids{2, 1, 11, 10, 3, 0}));
}

TEST_F(TinyVocabTest, LowerCaseCanBeTurnedOff) {
  EXPECT_EQ(Load(kTinyVocab, false).Tokenize("Hello hello"), (Tokens{"[UNK]", "hello"}));
  EXPECT_EQ(Load(kTinyVocab, true).Tokenize("Hello HÉLLO"), (Tokens{"hello", "hello"}));
}

TEST_F(TinyVocabTest, RepeatedTokenKeepsLastId) {
  const WordPieceTokenizer tokenizer = Load("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\nhi\r\n");
  EXPECT_EQ(tokenizer.Encode("hi", 3).input_ids, (Ids{2, 5, 3}));
  EXPECT_EQ(tokenizer.vocab_size(), 5);
}

TEST_F(TinyVocabTest, BadVocabularies) {
  EXPECT_EQ(InputErrorOf([&] { Load(""); }),
            path_.string() + ": file is empty; use the vocab.txt of a BERT checkpoint");
  EXPECT_TRUE(Contains(InputErrorOf([&] { Load("[PAD]\n[UNK]\n[SEP]\n"); }),
                       "vocabulary lacks the special token [CLS]"));
  EXPECT_TRUE(
      Contains(InputErrorOf([&] { Load("[PAD]\n\xFE\n"); }), path_.string() + ":2: invalid UTF-8"));
  EXPECT_TRUE(Contains(
      InputErrorOf([&] { WordPieceTokenizer::FromVocabFile(dir_.path() / "missing.txt"); }),
      "file not found"));
}

}  // namespace
}  // namespace iisan::data
