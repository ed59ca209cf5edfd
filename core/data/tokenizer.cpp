// WordPiece tokenization, step for step as transformers' BertTokenizer (PreTrainedTokenizer.
// tokenize -> BasicTokenizer -> WordpieceTokenizer) does it. Unicode facts come from
// unicode_tables.inc and unicode_folds.inc, generated from Python's unicodedata by tools/gen_unicode_tables.py.
//
// One deliberate simplification: characters are folded (lower-cased, NFD-decomposed, nonspacing
// marks dropped) one at a time, so NFD's canonical reordering of the marks that survive is not
// done. It only matters when two of the 25 spacing marks with a nonzero combining class (a few
// viramas, musical symbols) meet out of order, which no product title does.
#include "core/data/tokenizer.h"

#include <algorithm>
#include <stdexcept>

#include "core/data/input_error.h"
#include "core/data/text_file.h"

namespace iisan::data {
namespace {

struct CodePointRange {
  char32_t first;
  char32_t last;
};

struct CharacterFold {
  char32_t from;
  char32_t to[3];  // zero-terminated when shorter than kMaxFoldLength
};

#include "core/data/unicode_tables.inc"
#include "core/data/unicode_folds.inc"

static_assert(static_cast<size_t>(kMaxFoldLength) == std::size(CharacterFold{}.to));

constexpr char32_t kReplacementCharacter = 0xFFFD;
constexpr size_t kMaxInputCharsPerWord = 100;  // BertTokenizer's max_input_chars_per_word
constexpr std::string_view kContinuationPrefix = "##";
constexpr const char* kSpecialTokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

template <size_t N>
bool InRanges(const CodePointRange (&ranges)[N], char32_t cp) {
  const auto* after = std::upper_bound(
      std::begin(ranges), std::end(ranges), cp,
      [](char32_t value, const CodePointRange& range) { return value < range.first; });
  return after != std::begin(ranges) && cp <= (after - 1)->last;
}

// BasicTokenizer._is_control: every C* character except the three whitespace controls.
bool IsControl(char32_t cp) {
  return cp != U'\t' && cp != U'\n' && cp != U'\r' && InRanges(kOtherRanges, cp);
}

// BasicTokenizer._is_whitespace.
bool IsCleanedToSpace(char32_t cp) {
  return cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' ||
         InRanges(kSpaceSeparatorRanges, cp);
}

// BasicTokenizer._is_punctuation: all non-alphanumeric printable ASCII, and Unicode P*.
bool IsPunctuation(char32_t cp) {
  return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
         (cp >= 123 && cp <= 126) || InRanges(kPunctuationRanges, cp);
}

// BasicTokenizer._is_chinese_char: the CJK Unified Ideograph blocks BERT's authors listed.
bool IsCjkIdeograph(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Hangul syllables decompose into two or three conjoining jamo (Unicode §3.12), none of them Mn.
void AppendHangulJamo(char32_t cp, std::u32string* out) {
  constexpr char32_t kSyllableBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161,
                     kTrailBase = 0x11A7;
  constexpr char32_t kVowelCount = 21, kTrailCount = 28;
  const char32_t index = cp - kSyllableBase;
  out->push_back(kLeadBase + index / (kVowelCount * kTrailCount));
  out->push_back(kVowelBase + index % (kVowelCount * kTrailCount) / kTrailCount);
  if (index % kTrailCount != 0) out->push_back(kTrailBase + index % kTrailCount);
}

// lower(), NFD and removal of nonspacing marks, for one character.
void AppendFolded(char32_t cp, std::u32string* out) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) {
    AppendHangulJamo(cp, out);
    return;
  }
  if (InRanges(kNonspacingMarkRanges, cp)) return;
  const auto* fold = std::lower_bound(
      std::begin(kFolds), std::end(kFolds), cp,
      [](const CharacterFold& entry, char32_t value) { return entry.from < value; });
  if (fold == std::end(kFolds) || fold->from != cp) {
    out->push_back(cp);
    return;
  }
  for (const char32_t folded : fold->to) {
    if (folded == 0) break;
    out->push_back(folded);
  }
}

// Invalid bytes become U+FFFD, which cleaning then drops, as Python's errors="replace" would.
std::u32string DecodeUtf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t bad = FindInvalidUtf8(text.substr(i, 4));
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (bad == 0 || (bad != std::string_view::npos && bad < length)) {
      out.push_back(kReplacementCharacter);
      ++i;
      continue;
    }
    char32_t cp = length == 1 ? lead : lead & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) cp = (cp << 6) | (text[i + k] & 0x3F);
    out.push_back(cp);
    i += length;
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// BasicTokenizer._clean_text and _tokenize_chinese_chars.
std::u32string CleanText(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (const char32_t cp : text) {
    if (cp == 0 || cp == kReplacementCharacter || IsControl(cp)) continue;
    if (IsCleanedToSpace(cp)) {
      out.push_back(U' ');
    } else if (IsCjkIdeograph(cp)) {
      out.append({U' ', cp, U' '});
    } else {
      out.push_back(cp);
    }
  }
  return out;
}

// Python's str.split(): words between runs of whitespace.
std::vector<std::u32string_view> SplitOnWhitespace(std::u32string_view text) {
  std::vector<std::u32string_view> words;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || InRanges(kPythonWhitespaceRanges, text[i])) {
      if (i > start) words.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return words;
}

// BasicTokenizer._run_split_on_punc: every punctuation character becomes a word of its own.
std::vector<std::u32string_view> SplitOnPunctuation(std::u32string_view word) {
  std::vector<std::u32string_view> pieces;
  size_t start = 0;
  for (size_t i = 0; i < word.size(); ++i) {
    if (!IsPunctuation(word[i])) continue;
    if (i > start) pieces.push_back(word.substr(start, i - start));
    pieces.push_back(word.substr(i, 1));
    start = i + 1;
  }
  if (start < word.size()) pieces.push_back(word.substr(start));
  return pieces;
}

}  // namespace

WordPieceTokenizer WordPieceTokenizer::FromVocabFile(const std::filesystem::path& path,
                                                     bool lower_case) {
  const std::string bytes = ReadFile(path);
  WordPieceTokenizer tokenizer;
  tokenizer.lower_case_ = lower_case;
  TextLines lines(path, bytes);
  std::string_view line;
  while (lines.Next(&line)) {
    // Like transformers' load_vocab, a repeated token keeps its last line's id.
    const auto id = static_cast<int32_t>(tokenizer.id_to_token_.size());
    tokenizer.vocab_.insert_or_assign(std::string(line), id);
    tokenizer.id_to_token_.emplace_back(line);
  }
  if (tokenizer.vocab_.empty()) {
    throw InputError(path, 0, "file is empty; use the vocab.txt of a BERT checkpoint");
  }
  const auto id_of = [&](const std::string& token) {
    const auto found = tokenizer.vocab_.find(token);
    if (found == tokenizer.vocab_.end()) {
      throw InputError(path, 0,
                       "vocabulary lacks the special token " + token +
                           "; use the vocab.txt of a BERT checkpoint");
    }
    return found->second;
  };
  tokenizer.cls_id_ = id_of("[CLS]");
  tokenizer.sep_id_ = id_of("[SEP]");
  tokenizer.pad_id_ = id_of("[PAD]");
  tokenizer.unk_id_ = id_of("[UNK]");
  for (const char* special : kSpecialTokens) {
    const auto found = tokenizer.vocab_.find(special);
    tokenizer.special_tokens_.push_back(
        {special, found == tokenizer.vocab_.end() ? tokenizer.unk_id_ : found->second});
  }
  return tokenizer;
}

TokenizedText WordPieceTokenizer::Encode(std::string_view text, int max_length) const {
  if (max_length < 2) {
    throw std::invalid_argument("max_length must leave room for [CLS] and [SEP]; got " +
                                std::to_string(max_length));
  }
  const std::vector<int32_t> tokens = TokenIds(text);
  const size_t kept = std::min(tokens.size(), static_cast<size_t>(max_length) - 2);
  TokenizedText out;
  out.input_ids.reserve(static_cast<size_t>(max_length));
  out.input_ids.push_back(cls_id_);
  out.input_ids.insert(out.input_ids.end(), tokens.begin(),
                       tokens.begin() + static_cast<ptrdiff_t>(kept));
  out.input_ids.push_back(sep_id_);
  out.attention_mask.assign(out.input_ids.size(), 1);
  out.input_ids.resize(static_cast<size_t>(max_length), pad_id_);
  out.attention_mask.resize(static_cast<size_t>(max_length), 0);
  return out;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(std::string_view text) const {
  std::vector<std::string> tokens;
  for (const int32_t id : TokenIds(text)) tokens.push_back(id_to_token_[static_cast<size_t>(id)]);
  return tokens;
}

// PreTrainedTokenizer.tokenize: literal special tokens ("[SEP]") are cut out of the raw text
// and kept whole; everything between them goes through the basic and WordPiece tokenizers.
std::vector<int32_t> WordPieceTokenizer::TokenIds(std::string_view text) const {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (true) {
    size_t next = std::string_view::npos;
    const SpecialToken* special = nullptr;
    for (const SpecialToken& candidate : special_tokens_) {
      const size_t at = text.find(candidate.text, start);
      if (at < next) {
        next = at;
        special = &candidate;
      }
    }
    AppendBasicTokenIds(text.substr(start, next - start), &ids);
    if (special == nullptr) return ids;
    ids.push_back(special->id);
    start = next + special->text.size();
  }
}

void WordPieceTokenizer::AppendBasicTokenIds(std::string_view text,
                                             std::vector<int32_t>* ids) const {
  const std::u32string cleaned = CleanText(DecodeUtf8(text));
  std::u32string folded;
  for (const std::u32string_view word : SplitOnWhitespace(cleaned)) {
    std::u32string_view normalized = word;
    if (lower_case_) {
      folded.clear();
      for (const char32_t cp : word) AppendFolded(cp, &folded);
      normalized = folded;
    }
    for (const std::u32string_view piece : SplitOnPunctuation(normalized)) {
      AppendWordPieceIds(piece, ids);
    }
  }
}

// WordpieceTokenizer.tokenize for one word: greedy longest prefix in the vocabulary, then
// longest "##" continuation, and so on; a word that cannot be covered becomes one [UNK].
void WordPieceTokenizer::AppendWordPieceIds(std::u32string_view word,
                                            std::vector<int32_t>* ids) const {
  if (word.size() > kMaxInputCharsPerWord) {
    ids->push_back(unk_id_);
    return;
  }
  std::string utf8;
  std::vector<size_t> offsets;  // byte offset of each character, then the total length
  for (const char32_t cp : word) {
    offsets.push_back(utf8.size());
    AppendUtf8(cp, &utf8);
  }
  offsets.push_back(utf8.size());

  const size_t first_id = ids->size();
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    size_t end = word.size();
    for (; end > start; --end) {
      candidate.assign(start > 0 ? kContinuationPrefix : std::string_view());
      candidate.append(utf8, offsets[start], offsets[end] - offsets[start]);
      if (const auto found = vocab_.find(candidate); found != vocab_.end()) {
        ids->push_back(found->second);
        break;
      }
    }
    if (end == start) {
      ids->resize(first_id);
      ids->push_back(unk_id_);
      return;
    }
    start = end;
  }
}

}  // namespace iisan::data
