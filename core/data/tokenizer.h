// BERT WordPiece tokenizer that reproduces Hugging Face's (slow, Python) BertTokenizer: same
// cleaning, CJK spacing, lower-casing and accent stripping, punctuation splitting, greedy
// longest-match WordPiece and [CLS] ... [SEP] + [PAD] layout, so token ids match bit for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace iisan::data {

struct TokenizedText {
  std::vector<int32_t> input_ids;       // [CLS] tokens... [SEP] then [PAD]s; max_length long
  std::vector<int32_t> attention_mask;  // 1 for [CLS], tokens and [SEP]; 0 for padding
};

class WordPieceTokenizer {
 public:
  // Reads a BERT vocab.txt (one token per line; id = line number - 1). InputError if the file
  // is missing, empty, not UTF-8 or lacks [CLS], [SEP], [PAD] or [UNK].
  static WordPieceTokenizer FromVocabFile(const std::filesystem::path& path,
                                          bool lower_case = true);

  // Tokenizes like tokenizer(text, max_length=max_length, padding="max_length",
  // truncation=True): the tokens are cut so that [SEP] is always last. max_length >= 2.
  TokenizedText Encode(std::string_view text, int max_length = 30) const;

  // The WordPiece tokens of text, without [CLS] and [SEP] (like BertTokenizer.tokenize).
  std::vector<std::string> Tokenize(std::string_view text) const;

  int vocab_size() const { return static_cast<int>(vocab_.size()); }

 private:
  struct SpecialToken {
    std::string text;
    int32_t id;
  };

  WordPieceTokenizer() = default;
  std::vector<int32_t> TokenIds(std::string_view text) const;
  void AppendBasicTokenIds(std::string_view text, std::vector<int32_t>* ids) const;
  void AppendWordPieceIds(std::u32string_view word, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<SpecialToken> special_tokens_;  // cut out of the text before anything else
  bool lower_case_ = true;
  int32_t cls_id_ = 0;
  int32_t sep_id_ = 0;
  int32_t pad_id_ = 0;
  int32_t unk_id_ = 0;
};

}  // namespace iisan::data
