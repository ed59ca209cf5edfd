// Safetensors: round trips of every dtype, the byte layout of the reference implementation,
// the lifetime of mapped tensors, one named error per malformation, an atomic writer that
// survives being killed, and seeded fuzz runs of mutated files through the parser.
#include "core/models/safetensors.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/core/models/model_test_util.h"
#include "tests/fuzz_mutator.h"

namespace iisan::models {
namespace {

namespace fs = std::filesystem;
using testing::ExpectErrorContaining;

fs::path ScratchDir(const std::string& name) {
  const auto dir = fs::path(::testing::TempDir()) / ("safetensors_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file with the given header text (unpadded) and data bytes.
std::string FileBytes(const std::string& header, const std::string& data = "") {
  const uint64_t length = header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &length, 8);
  return bytes + header + data;
}

// Every dtype the reader returns, with values at their edges.
NamedTensors EveryDtype() {
  torch::manual_seed(7);
  return {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::tensor({1.0 / 3.0, -1e300, std::numeric_limits<double>::denorm_min()}, torch::kFloat64)},
      {"f16", torch::tensor({1.5, -2.25, 65504.0, 6.1e-5, 0.0}).to(torch::kFloat16)},
      {"bf16", torch::tensor({1.0, -3.5, 3.0e38, 1.0e-38, 0.0078125}).to(torch::kBFloat16)},
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{0}, std::numeric_limits<int64_t>::max()},
                            torch::kInt64)},
      {"i32", torch::tensor({std::numeric_limits<int32_t>::min(), 7, std::numeric_limits<int32_t>::max()}, torch::kInt32)},
      {"i16", torch::tensor({-32768, 12, 32767}, torch::kInt16)},
      {"i8", torch::tensor({-128, 0, 127}, torch::kInt8)},
      {"u8", torch::tensor({0, 128, 255}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5f)},
      {"empty", torch::empty({0, 3})},
      {"transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t()},
  };
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  const auto path = ScratchDir("roundtrip") / "all.safetensors";
  const auto tensors = EveryDtype();
  WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode"}});

  const SafetensorsReader reader(path);
  EXPECT_EQ(reader.names(), (std::vector<std::string>{"bf16", "bool", "empty", "f16", "f32", "f64", "i16", "i32",
                                                      "i64", "i8", "scalar", "transposed", "u8"}));
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "ünïcode"}}));
  for (const auto& [name, expected] : tensors) {
    const auto actual = reader.Tensor(name);
    EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(torch::equal(actual, expected)) << name;
  }
  EXPECT_EQ(reader.Info("bf16").dtype, "BF16");
  EXPECT_EQ(reader.Info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(reader.Info("empty").begin, reader.Info("empty").end);
  EXPECT_TRUE(reader.contains("f16"));
  EXPECT_FALSE(reader.contains("f17"));
}

TEST(SafetensorsTest, LayoutFollowsTheReferenceWriter) {
  const auto path = ScratchDir("layout") / "x.safetensors";
  WriteSafetensors(path, {{"b", torch::tensor({1.0f}).to(torch::kBFloat16)}, {"a", torch::tensor({1.0f, -2.0f})}});
  const std::string bytes = ReadBytes(path);
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  const std::string header = bytes.substr(8, header_length);
  EXPECT_EQ(header,
            std::string(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}})") + std::string(3, ' '));
  // Little-endian: 1.0f is 00 00 80 3F, -2.0f is 00 00 00 C0, bf16 1.0 is 80 3F.
  EXPECT_EQ(bytes.substr(8 + header_length), std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0\x80\x3f", 10));
}

// The fixture was written by the Python safetensors package; a file of one dtype comes out
// byte for byte the same from our writer.
TEST(SafetensorsTest, RewritesAReferenceFileByteForByte) {
  const fs::path fixture = fs::path(IISAN_SOURCE_DIR) / "tests/fixtures/bert_small/model.safetensors";
  const SafetensorsReader reader(fixture);
  NamedTensors tensors;
  for (const auto& name : reader.names()) tensors.emplace_back(name, reader.Tensor(name));
  const auto copy = ScratchDir("rewrite") / "model.safetensors";
  WriteSafetensors(copy, tensors, reader.metadata());
  EXPECT_EQ(ReadBytes(copy), ReadBytes(fixture));
}

TEST(SafetensorsTest, TensorsOutliveTheReaderAndWritesStayPrivate) {
  const auto path = ScratchDir("lifetime") / "x.safetensors";
  WriteSafetensors(path, {{"w", torch::arange(1024, torch::kFloat32)}});
  torch::Tensor view;
  {
    const SafetensorsReader reader(path);
    view = reader.Tensor("w");
  }
  EXPECT_EQ(view[1000].item<float>(), 1000.0f);
  view.fill_(-1.0f);
  EXPECT_EQ(SafetensorsReader(path).Tensor("w")[1000].item<float>(), 1000.0f);
}

TEST(SafetensorsTest, UnalignedTensorsAreCopiedToAlignedMemory) {
  const auto path = ScratchDir("unaligned") / "x.safetensors";
  WriteSafetensors(path, {{"a", torch::tensor({true, false, true})}, {"b", torch::tensor({1.5, -2.5}, torch::kFloat64)}});
  const auto b = SafetensorsReader(path).Tensor("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data_ptr()) % 8, 0u);
  EXPECT_TRUE(torch::equal(b, torch::tensor({1.5, -2.5}, torch::kFloat64)));
}

TEST(SafetensorsTest, BoolBytesOtherThanZeroAndOneReadAsTrue) {
  const auto path = ScratchDir("bool") / "x.safetensors";
  WriteBytes(path, FileBytes(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", std::string("\x00\x07\x01", 3)));
  EXPECT_TRUE(torch::equal(SafetensorsReader(path).Tensor("b"), torch::tensor({false, true, true})));
}

// Each malformed file gives a SafetensorsError naming the file and what is wrong with it.
void ExpectMalformed(const std::string& case_name, const std::string& bytes, const std::string& fragment) {
  SCOPED_TRACE(case_name);
  const auto path = ScratchDir("malformed") / (case_name + ".safetensors");
  WriteBytes(path, bytes);
  try {
    SafetensorsReader reader(path);
    ADD_FAILURE() << "opened without error";
  } catch (const SafetensorsError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << message;
  }
}

std::string Entry(const std::string& fields) { return R"({"t":{)" + fields + "}}"; }

TEST(SafetensorsTest, MalformedFilesGiveNamedErrors) {
  const std::string data8(8, '\0');
  ExpectMalformed("short", "abcde", "5 bytes, shorter than the 8-byte header length");
  ExpectMalformed("length_past_end", FileBytes("{}").substr(0, 9), "header length 2 is impossible for a file of 9 bytes");
  ExpectMalformed("length_huge", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10), "is impossible");
  ExpectMalformed("not_json", FileBytes("{\"t\": nope}"), "header is not valid JSON");
  ExpectMalformed("invalid_utf8", FileBytes("{\"\xff\": 1}"), "header is not valid JSON");
  ExpectMalformed("array", FileBytes("[1, 2]"), "header must be a JSON object, got array");
  ExpectMalformed("entry_not_object", FileBytes(R"({"t": 3})"), "tensor 't': entry must be an object, got number");
  ExpectMalformed("no_dtype", FileBytes(Entry(R"("shape":[2],"data_offsets":[0,8])"), data8), "tensor 't': entry has no 'dtype'");
  ExpectMalformed("no_shape", FileBytes(Entry(R"("dtype":"F32","data_offsets":[0,8])"), data8), "entry has no 'shape'");
  ExpectMalformed("no_offsets", FileBytes(Entry(R"("dtype":"F32","shape":[2])"), data8), "entry has no 'data_offsets'");
  ExpectMalformed("dtype_number", FileBytes(Entry(R"("dtype":4,"shape":[2],"data_offsets":[0,8])"), data8),
                  "'dtype' must be a string, got number");
  ExpectMalformed("dtype_unknown", FileBytes(Entry(R"("dtype":"F7","shape":[2],"data_offsets":[0,8])"), data8),
                  "unknown dtype 'F7'");
  ExpectMalformed("shape_string", FileBytes(Entry(R"("dtype":"F32","shape":"2","data_offsets":[0,8])"), data8),
                  "'shape' must be an array, got string");
  ExpectMalformed("shape_negative", FileBytes(Entry(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), data8),
                  "'shape' holds -2, not a size");
  ExpectMalformed("shape_fraction", FileBytes(Entry(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])"), data8),
                  "'shape' holds 2.0, not a size");
  ExpectMalformed("shape_overflow",
                  FileBytes(Entry(R"("dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8])"), data8),
                  "more elements than 2^64");
  ExpectMalformed("offsets_one", FileBytes(Entry(R"("dtype":"F32","shape":[2],"data_offsets":[8])"), data8),
                  "'data_offsets' must be an array [begin, end]");
  ExpectMalformed("offsets_string", FileBytes(Entry(R"("dtype":"F32","shape":[2],"data_offsets":["0",8])"), data8),
                  "are not byte offsets");
  ExpectMalformed("offsets_reversed", FileBytes(Entry(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"), data8),
                  "are reversed");
  ExpectMalformed("offsets_outside", FileBytes(Entry(R"("dtype":"F32","shape":[4],"data_offsets":[0,16])"), data8),
                  "reach outside the data section of 8 bytes");
  ExpectMalformed("length_mismatch", FileBytes(Entry(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), data8),
                  "holds 8 bytes, but shape [3] of F32 needs 12");
  ExpectMalformed("overlap",
                  FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')),
                  "tensors 'a' and 'b' overlap");
  ExpectMalformed("duplicate",
                  FileBytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xy"),
                  "names tensor 'a' twice");
  ExpectMalformed("metadata_array", FileBytes(R"({"__metadata__":["a"]})"), "'__metadata__' must be an object of strings");
  ExpectMalformed("metadata_number", FileBytes(R"({"__metadata__":{"k":1}})"), "'__metadata__' entry 'k' must be a string");
}

// A malformed header is refused by name and field, its text never quoted: a hostile file's bytes
// could be anything, and errors travel to logs and to the cache service's clients.
TEST(SafetensorsTest, ErrorsNeverQuoteTheHeaderText) {
  const std::string secret = "s3cretword-s3cretword-s3cretword-s3cretword";
  const std::string data8(8, '\0');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not_json", FileBytes("{\"t\": " + secret + "}")},
      {"unterminated", FileBytes("{\"t\": \"" + secret)},
      {"number_overflow", FileBytes("{\"t\": 1" + std::string(400, '7') + "e999}")},
      {"shape_string", FileBytes(Entry(R"("dtype":"F32","shape":[")" + secret + R"("],"data_offsets":[0,8])"), data8)},
      {"offsets_object", FileBytes(Entry(R"("dtype":"F32","shape":[2],"data_offsets":{")" + secret + R"(":1})"), data8)},
  };
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    const auto path = ScratchDir("quoting") / (name + ".safetensors");
    WriteBytes(path, bytes);
    try {
      SafetensorsReader reader(path);
      ADD_FAILURE() << "opened without error";
    } catch (const SafetensorsError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << message;
      EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
      EXPECT_EQ(message.find("7777"), std::string::npos) << message;
    }
  }
}

TEST(SafetensorsTest, HeaderLongerThanTheLimitIsRejectedBeforeParsing) {
  // A sparse file larger than the 100 MB limit, claiming a header just over it.
  const auto path = ScratchDir("limit") / "big.safetensors";
  const uint64_t claimed = 100'000'001;
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &claimed, 8);
  WriteBytes(path, bytes);
  fs::resize_file(path, 200'000'000);
  ExpectErrorContaining([&] { SafetensorsReader reader(path); }, {"header length 100000001", "limit 100000000"});
}

TEST(SafetensorsTest, MissingFilesAndTensorsAndUnreadableDtypesAreNamed) {
  const auto dir = ScratchDir("lookup");
  ExpectErrorContaining([&] { SafetensorsReader reader(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
  ExpectErrorContaining([&] { SafetensorsReader reader(dir); }, {dir.string(), "not a regular file"});

  const auto path = dir / "u16.safetensors";
  WriteBytes(path, FileBytes(R"({"w":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})", "abcd"));
  const SafetensorsReader reader(path);
  EXPECT_EQ(reader.Info("w").shape, std::vector<int64_t>{2});
  ExpectErrorContaining([&] { reader.Tensor("w"); }, {path.string(), "tensor 'w'", "dtype U16", "LibTorch cannot hold"});
  ExpectErrorContaining([&] { reader.Info("v"); }, {path.string(), "no tensor named 'v'"});
}

TEST(SafetensorsTest, WriterRejectsWhatTheFormatCannotHoldAndLeavesTheOldFile) {
  const auto dir = ScratchDir("writer_errors");
  const auto path = dir / "x.safetensors";
  WriteSafetensors(path, {{"kept", torch::ones({2})}});
  const std::string before = ReadBytes(path);
  ExpectErrorContaining([&] { WriteSafetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}); },
                        {path.string(), "tensor 'a' given twice"});
  ExpectErrorContaining([&] { WriteSafetensors(path, {{"__metadata__", torch::ones({1})}}); }, {"reserved"});
  ExpectErrorContaining([&] { WriteSafetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}); },
                        {"tensor 'c'", "ComplexFloat", "cannot store"});
  ExpectErrorContaining([&] { WriteSafetensors(path, {{"u", torch::Tensor()}}); }, {"tensor 'u' is undefined"});
  ExpectErrorContaining([&] { WriteSafetensors(dir / "no/such/dir/x.safetensors", {{"a", torch::ones({1})}}); },
                        {"cannot create"});
  EXPECT_EQ(ReadBytes(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1) << "a temporary file was left";
}

// A writer killed at an arbitrary point leaves either the previous complete file or the new
// one under the final name, never a mix.
TEST(SafetensorsTest, KilledWriterNeverLeavesAPartialFile) {
  const auto path = ScratchDir("killed") / "x.safetensors";
  const NamedTensors first = {{"w", torch::full({256, 1024}, 1.0f)}};
  const NamedTensors second = {{"w", torch::full({256, 1024}, 2.0f)}};
  WriteSafetensors(path, first);
  std::mt19937 random(3);
  for (int attempt = 0; attempt < 6; ++attempt) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // The child must never return into the test runner, whatever happens.
      try {
        for (int round = 0;; ++round) WriteSafetensors(path, round % 2 ? first : second);
      } catch (...) {
      }
      ::_exit(1);
    }
    ::usleep(1000 + random() % 20000);
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    const auto w = SafetensorsReader(path).Tensor("w");
    const float value = w[0][0].item<float>();
    EXPECT_TRUE(value == 1.0f || value == 2.0f);
    EXPECT_TRUE(torch::equal(w, torch::full({256, 1024}, value))) << "attempt " << attempt;
  }
}

TEST(SafetensorsTest, DigestIsFnv1aOfTheBytes) {
  const auto dir = ScratchDir("digest");
  WriteBytes(dir / "a", "a");
  EXPECT_EQ(SafetensorsDigest(dir / "a"), "af63dc4c8601ec8c");
  WriteBytes(dir / "empty", "");
  EXPECT_EQ(SafetensorsDigest(dir / "empty"), "cbf29ce484222325");

  WriteSafetensors(dir / "w.safetensors", {{"w", torch::zeros({4})}});
  const auto before = SafetensorsDigest(dir / "w.safetensors");
  WriteSafetensors(dir / "w.safetensors", {{"w", torch::tensor({0.0f, 0.0f, 1e-30f, 0.0f})}});
  EXPECT_NE(SafetensorsDigest(dir / "w.safetensors"), before);
}

// --- Fuzzing (tests/fuzz_mutator.h): mutated files either parse to the same result twice or
// give a SafetensorsError that names the file.

// Valid files with several dtypes, metadata, a 0-d and an empty tensor: the seeds the mutations
// start from. The first's data section outweighs the header, so that random byte flips often
// leave a parsable file.
std::vector<std::string> FuzzSeedFiles(const fs::path& dir) {
  const auto path = dir / "seed.safetensors";
  WriteSafetensors(path,
                   {{"emb", torch::randn({64, 16})},
                    {"half", torch::randn({5}).to(torch::kFloat16)},
                    {"ids", torch::arange(3)},
                    {"mask", torch::tensor({true, false})},
                    {"scalar", torch::tensor(1.0)},
                    {"none", torch::empty({0})}},
                   {{"format", "pt"}});
  const std::string first = ReadBytes(path);
  WriteSafetensors(path, {{"a.weight", torch::ones({2, 3}, torch::kBFloat16)}, {"b", torch::zeros({0, 4})}});
  return {first, ReadBytes(path)};
}

std::string WithHeader(const std::string& header, const std::string& data) { return FileBytes(header, data); }

// Replaces a random value inside the JSON header with a hostile one, keeping the header valid
// JSON, so that the checks after parsing are what gets exercised.
std::string MutateHeaderValue(const nlohmann::json& header, const std::string& data, iisan::testing::FuzzMutator& random) {
  static const std::vector<nlohmann::json> kHostile = {
      nullptr, true, -1, 0, 1, 7, 255, 4096, -9223372036854775807LL - 1, 18446744073709551615ULL, 1e300, 0.5,
      "", "F32", "BF16", "U64", "F8_E4M3", "BOOL", "x", nlohmann::json::array(), nlohmann::json::object(),
      {0, 0}, {0, 8}, {8, 0}, {3, 1000000}, {0}, {1, 2, 3}, {"a"}, {-1, 4}, {{"k", "v"}}, {{"k", 1}},
      {0, 2147483648LL, 2147483648LL, 2147483648LL}, {4294967296LL, 4294967296LL, 0}, {9223372036854775807LL, 2}};
  nlohmann::json mutated = header;
  auto flat = mutated.flatten();
  if (flat.empty()) return WithHeader(mutated.dump(), data);
  auto item = flat.begin();
  std::advance(item, random.Below(flat.size()));
  const std::string pointer = item.key();
  // Replace either the leaf or the object/array holding it.
  nlohmann::json::json_pointer target(pointer);
  if (random.Below(3) == 0 && !target.empty()) target = target.parent_pointer();
  mutated[target] = kHostile[random.Below(kHostile.size())];
  return WithHeader(mutated.dump(), data);
}

// Parses a file and reads every tensor; returns a description that a second parse must repeat.
std::string ParseAndReadAll(const fs::path& path) {
  using iisan::testing::FuzzRequire;
  const SafetensorsReader reader(path);
  std::ostringstream seen;
  for (const auto& name : reader.names()) {
    const auto& info = reader.Info(name);
    seen << name << ' ' << info.dtype << ' ' << info.begin << ' ' << info.end << ';';
    try {
      const auto tensor = reader.Tensor(name);
      FuzzRequire(tensor.sizes().vec() == info.shape, "tensor '" + name + "' has the shape of its entry");
      FuzzRequire(static_cast<uint64_t>(tensor.numel()) * tensor.element_size() == info.end - info.begin,
                  "tensor '" + name + "' covers its byte range");
      // Touch every byte, so that a range past the mapping would fault here.
      seen << tensor.to(torch::kFloat64).sum().item<double>() << ';';
    } catch (const SafetensorsError&) {
      seen << "unreadable;";
    }
  }
  for (const auto& [key, value] : reader.metadata()) seen << key << '=' << value << ';';
  return seen.str();
}

class SafetensorsFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A folder of this test's own, in this process: ctest runs the three tests of this fixture
    // as processes side by side, and one truncating the shared case file while another had it
    // mapped was a SIGBUS in the other's reader (a mapped page past the file's new end).
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ScratchDir(std::string("fuzz_") + test->name() + "_" + std::to_string(::getpid()));
    seeds_ = FuzzSeedFiles(dir_);
    uint64_t header_length = 0;
    std::memcpy(&header_length, seeds_[0].data(), 8);
    header_ = nlohmann::json::parse(seeds_[0].substr(8, header_length));
    data_ = seeds_[0].substr(8 + header_length);
    path_ = dir_ / "case.safetensors";
  }
  // Writes each file `next` makes, parses it twice; counts both outcomes, which must both occur
  // (`at_least` times each), or the mutations are not exploring the parser.
  void Fuzz(const std::function<std::string()>& next, int64_t at_least) {
    const auto outcome = iisan::testing::RunFuzz<SafetensorsError>(
        next, 1000,
        [&](const std::string& bytes) {
          WriteBytes(path_, bytes);
          const std::string first = ParseAndReadAll(path_);
          iisan::testing::FuzzRequire(first == ParseAndReadAll(path_), "a second parse sees the same file");
        },
        [&](const SafetensorsError& error) {
          const std::string message = error.what();
          return message.rfind(path_.string() + ": ", 0) == 0 ? "" : "the error does not name the file: " + message;
        });
    EXPECT_GE(outcome.parsed, at_least);
    EXPECT_GE(outcome.refused, at_least);
  }

  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_, path_;
  std::vector<std::string> seeds_;
  nlohmann::json header_;
  std::string data_;
};

TEST_F(SafetensorsFuzzTest, MutatedFilesParseConsistentlyOrNameTheFile) {
  iisan::testing::FuzzMutator mutator(20261130, seeds_);
  Fuzz([&] { return mutator.Next(); }, 100);
}

// Mutated header text with a correct length field, so that the JSON parser sees it whole.
TEST_F(SafetensorsFuzzTest, MutatedHeaderTextParsesConsistentlyOrNamesTheFile) {
  iisan::testing::FuzzMutator mutator(20261131, {header_.dump(), header_.dump(2)},
                                      {"\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F32\"",
                                       "\"U16\"", "[", "]", "{", "}", ",", ":", "null"});
  Fuzz([&] { return WithHeader(mutator.Next(), data_); }, 5);
}

// A hostile value anywhere in a header that stays valid JSON: the checks after parsing.
TEST_F(SafetensorsFuzzTest, HostileHeaderValuesAreRefusedNamingTheFile) {
  iisan::testing::FuzzMutator mutator(20261132, {""});
  Fuzz([&] { return MutateHeaderValue(header_, data_, mutator); }, 10);
}

}  // namespace
}  // namespace iisan::models
