// Deterministic fuzzing for the parsers' tests: a seeded mutator that turns a corpus of valid
// inputs into damaged ones (bit flips, byte inserts and deletes, truncation, splicing, numbers
// replaced by extreme values, binary fields overwritten with extreme integers, deep nesting,
// dictionary tokens), and a driver that feeds a fixed number of them to a parser and fails the
// test when anything but the parser's documented error escapes. A crash ends the test process
// and a hang is caught by the watchdog, both naming the seed and iteration that caused them, so
// that a failure is reproduced by running the same test again.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace iisan::testing {

class FuzzMutator {
 public:
  // `corpus`: valid inputs (at least one); `dictionary`: tokens of the format (keys, separators)
  // that mutations insert or substitute.
  FuzzMutator(uint64_t seed, std::vector<std::string> corpus, std::vector<std::string> dictionary = {})
      : state_(seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL),
        corpus_(std::move(corpus)),
        dictionary_(std::move(dictionary)) {
    if (corpus_.empty()) throw std::invalid_argument("FuzzMutator: the corpus is empty");
  }

  // A corpus entry with one to four mutations applied.
  std::string Next() {
    std::string input = corpus_[Below(corpus_.size())];
    for (uint64_t n = 1 + Below(4); n > 0; --n) Mutate(input);
    return input;
  }

  // One mutation of `input`, chosen at random.
  void Mutate(std::string& input) {
    switch (Below(11)) {
      case 0: FlipBit(input); break;
      case 1: ReplaceByte(input); break;
      case 2: InsertBytes(input); break;
      case 3: DeleteRange(input); break;
      case 4: Truncate(input); break;
      case 5: Splice(input); break;
      case 6: DuplicateRange(input); break;
      case 7: ReplaceNumber(input); break;
      case 8: OverwriteInteger(input); break;
      case 9: Nest(input); break;
      default: UseDictionary(input); break;
    }
    if (input.size() > kMaxInputBytes) input.resize(kMaxInputBytes);
  }

  // Uniform in [0, n) (0 when n is 0): splitmix64, the same on every platform and library.
  uint64_t Below(uint64_t n) {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return n == 0 ? 0 : z % n;
  }

  // Numbers that break parsers: signs, the edges of 32- and 64-bit integers, overflow, the
  // edges of doubles, and what JSON cannot hold (NaN, infinity).
  static const std::vector<std::string>& ExtremeNumbers() {
    static const std::vector<std::string> numbers = {
        "-1", "0", "-0", "1", "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295",
        "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "-9223372036854775809", "18446744073709551615", "18446744073709551616", "99999999999999999999999999",
        "1e308", "-1e308", "1e309", "1e999", "4.9e-324", "1e-400", "0.5", "-0.0", "NaN", "nan", "-nan", "inf",
        "-inf", "Infinity", "1e", "0x10", "00", "+1"};
    return numbers;
  }

 private:
  static constexpr size_t kMaxInputBytes = size_t{1} << 20;

  size_t Position(const std::string& input) { return static_cast<size_t>(Below(input.size() + 1)); }

  void FlipBit(std::string& input) {
    if (input.empty()) return;
    input[Below(input.size())] ^= static_cast<char>(1u << Below(8));
  }

  void ReplaceByte(std::string& input) {
    static constexpr char kInteresting[] = {'\0', '\xff', '\x7f', '\x80', '\xc0', '\xef', '"', '\\', '{', '}', '[',
                                            ']', ',', ':', '\t', '\n', '\r', ' ', '-', '.', 'e', '0', '9'};
    if (input.empty()) return;
    const size_t at = Below(input.size());
    input[at] = Below(2) ? static_cast<char>(Below(256)) : kInteresting[Below(sizeof kInteresting)];
  }

  void InsertBytes(std::string& input) {
    std::string bytes(1 + Below(8), '\0');
    for (char& c : bytes) c = static_cast<char>(Below(256));
    input.insert(Position(input), bytes);
  }

  void DeleteRange(std::string& input) {
    if (input.empty()) return;
    const size_t at = Below(input.size());
    input.erase(at, 1 + Below(std::min<uint64_t>(input.size() - at, 64)));
  }

  void Truncate(std::string& input) { input.resize(Below(input.size() + 1)); }

  // The head of this input and the tail of another (or the same) corpus entry.
  void Splice(std::string& input) {
    const std::string& other = corpus_[Below(corpus_.size())];
    const size_t keep = Position(input);
    const size_t from = static_cast<size_t>(Below(other.size() + 1));
    input = input.substr(0, keep) + other.substr(from);
  }

  void DuplicateRange(std::string& input) {
    if (input.empty()) return;
    const size_t at = Below(input.size());
    const std::string range = input.substr(at, 1 + Below(std::min<uint64_t>(input.size() - at, 256)));
    for (uint64_t copies = 1 + Below(8); copies > 0; --copies) input.insert(at, range);
  }

  // A run of number characters (digits, sign, point, exponent) replaced by an extreme number;
  // with no number in the input, one is inserted.
  void ReplaceNumber(std::string& input) {
    const auto& numbers = ExtremeNumbers();
    const std::string& number = numbers[Below(numbers.size())];
    std::vector<size_t> starts;
    for (size_t i = 0; i < input.size(); ++i) {
      const bool digit = input[i] >= '0' && input[i] <= '9';
      if (digit && (i == 0 || !(input[i - 1] >= '0' && input[i - 1] <= '9'))) starts.push_back(i);
    }
    if (starts.empty()) {
      input.insert(Position(input), number);
      return;
    }
    size_t begin = starts[Below(starts.size())];
    if (begin > 0 && input[begin - 1] == '-') --begin;
    size_t end = begin + 1;
    while (end < input.size() && std::strchr("0123456789.eE+-", input[end]) != nullptr && input[end] != '\0') ++end;
    input.replace(begin, end - begin, number);
  }

  // 4 or 8 bytes at an aligned offset overwritten by an extreme little-endian integer: the
  // length fields, counts and offsets of binary formats.
  void OverwriteInteger(std::string& input) {
    static constexpr uint64_t kValues[] = {0,
                                           1,
                                           0xFFFFFFFFFFFFFFFFULL,
                                           0x7FFFFFFFULL,
                                           0x80000000ULL,
                                           0xFFFFFFFFULL,
                                           0x100000000ULL,
                                           0x7FFFFFFFFFFFFFFFULL,
                                           0x8000000000000000ULL,
                                           0x0000FFFFFFFFFFFFULL};
    const size_t width = Below(2) ? 8 : 4;
    if (input.size() < width) return;
    const size_t at = Below(input.size() / width) * width;
    const uint64_t value = kValues[Below(sizeof kValues / sizeof kValues[0])];
    std::memcpy(input.data() + at, &value, width);
  }

  // Arrays or objects nested 10 to 100000 deep (closed or not), at a random position.
  void Nest(std::string& input) {
    static constexpr uint64_t kDepths[] = {10, 63, 64, 65, 200, 5000, 100000};
    const uint64_t depth = kDepths[Below(sizeof kDepths / sizeof kDepths[0])];
    const bool objects = Below(2);
    std::string open, close;
    for (uint64_t i = 0; i < depth; ++i) {
      open += objects ? "{\"a\":" : "[";
      close += objects ? "}" : "]";
    }
    input.insert(Position(input), Below(2) ? open + "1" + close : open);
  }

  void UseDictionary(std::string& input) {
    if (dictionary_.empty()) return InsertBytes(input);
    const std::string& token = dictionary_[Below(dictionary_.size())];
    if (Below(2) || input.empty()) {
      input.insert(Position(input), token);
    } else {
      const size_t at = Below(input.size());
      input.replace(at, std::min<uint64_t>(token.size(), input.size() - at), token);
    }
  }

  uint64_t state_;
  std::vector<std::string> corpus_;
  std::vector<std::string> dictionary_;
};

// The input shown in a failure message: printable ASCII as is, other bytes as \xNN, cut short.
inline std::string FuzzInputExcerpt(std::string_view input) {
  std::string out;
  for (const unsigned char c : input.substr(0, 400)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  if (input.size() > 400) out += "... (" + std::to_string(input.size()) + " bytes)";
  return out;
}

// Aborts the process, naming the input, when one iteration runs longer than `limit`: a parser
// that hangs must fail the test with the input that hung it, not just a ctest timeout. The limit
// is generous (no parser here takes more than milliseconds), so a slow machine does not trip it.
class FuzzWatchdog {
 public:
  explicit FuzzWatchdog(std::string test, std::chrono::seconds limit = std::chrono::seconds(120))
      : test_(std::move(test)), limit_(limit), thread_([this] { Watch(); }) {}
  ~FuzzWatchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  FuzzWatchdog(const FuzzWatchdog&) = delete;
  FuzzWatchdog& operator=(const FuzzWatchdog&) = delete;

  void Begin(int64_t iteration, std::string_view input) {
    std::lock_guard lock(mutex_);
    iteration_ = iteration;
    input_ = FuzzInputExcerpt(input);
    started_ = std::chrono::steady_clock::now();
  }

 private:
  void Watch() {
    std::unique_lock lock(mutex_);
    while (!done_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (!done_ && iteration_ >= 0 && std::chrono::steady_clock::now() - started_ > limit_) {
        std::fprintf(stderr, "%s: iteration %lld has run for more than %lld s (a hang); its input: %s\n",
                     test_.c_str(), static_cast<long long>(iteration_), static_cast<long long>(limit_.count()),
                     input_.c_str());
        std::fflush(stderr);
        std::abort();
      }
    }
  }

  std::string test_;
  std::chrono::seconds limit_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  int64_t iteration_ = -1;
  std::string input_;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

// A broken invariant of a parsed result (a "successful" parse that is inconsistent). Not
// derived from std::runtime_error, so that RunFuzz never takes it for a parser's error.
class FuzzInvariantError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

inline void FuzzRequire(bool holds, const std::string& invariant) {
  if (!holds) throw FuzzInvariantError("a parsed result breaks an invariant: " + invariant);
}

// The `Error` of RunFuzz for parsers that report every problem without throwing: no exception is
// of this type, so any exception fails the test.
struct NoExceptionExpected {};

// Counts of a fuzz run: a corpus whose mutations all fail (or all parse) tests little, so the
// tests check that both outcomes occur.
struct FuzzOutcome {
  int64_t parsed = 0;
  int64_t refused = 0;
};

// Feeds `iterations` inputs from `next` to `parse`. Each must return, or throw `Error` whose
// message `check_error` accepts (it returns "" or the problem, e.g. "does not name the file").
// Any other exception fails the test, naming the iteration and input; so does a rejected message.
template <typename Error>
FuzzOutcome RunFuzz(const std::function<std::string()>& next, int64_t iterations,
                    const std::function<void(const std::string&)>& parse,
                    const std::function<std::string(const Error&)>& check_error = nullptr) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  FuzzWatchdog watchdog(std::string(info->test_suite_name()) + "." + info->name());
  FuzzOutcome outcome;
  int64_t failures = 0;
  for (int64_t i = 0; i < iterations && failures < 10; ++i) {
    const std::string input = next();
    watchdog.Begin(i, input);
    std::string problem;
    try {
      parse(input);
      ++outcome.parsed;
    } catch (const Error& error) {
      ++outcome.refused;
      if (check_error) problem = check_error(error);
    } catch (const std::exception& error) {
      problem = std::string("an exception of another type escaped: ") + error.what();
    } catch (...) {
      problem = "a non-standard exception escaped";
    }
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << "iteration " << i << ": " << problem << "\ninput: " << FuzzInputExcerpt(input);
    }
  }
  return outcome;
}

// RunFuzz over a mutator's inputs.
template <typename Error>
FuzzOutcome RunFuzz(FuzzMutator& mutator, int64_t iterations, const std::function<void(const std::string&)>& parse,
                    const std::function<std::string(const Error&)>& check_error = nullptr) {
  return RunFuzz<Error>([&] { return mutator.Next(); }, iterations, parse, check_error);
}

}  // namespace iisan::testing
