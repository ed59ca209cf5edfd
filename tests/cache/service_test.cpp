// The cache service over real sockets with the real builder: concurrent identical ensure
// requests run one build; malformed and oversized requests get error replies and the service
// keeps serving; tokens guard it; list, status, evict and ensure-by-key.
#include "cache/service.h"

#include <thread>

#include <boost/asio.hpp>
#include <gtest/gtest.h>

#include "cache/ensure.h"
#include "cache/state_file.h"
#include "cache_test_data.h"

namespace iisan::cache {
namespace {

namespace asio = boost::asio;

// Resolves {"root": DIR} to the tiny problem written under DIR, cached in `cache_dir`.
SpecResolver TinyResolver(const std::filesystem::path& cache_dir) {
  return [cache_dir](const nlohmann::json& spec) {
    const std::filesystem::path root = spec.at("root").get<std::string>();
    auto dataset = std::make_shared<data::Dataset>(testing::LoadTinyDataset(root));
    auto request = std::make_shared<EnsureRequest>();
    request->dataset = dataset.get();
    request->options = testing::TinyOptions(root);
    request->options.chunk_items = 4;
    request->fingerprint = CacheFingerprint(CacheInputs(*dataset, request->options));
    request->path = cache_dir / (request->fingerprint + ".h5");
    ServiceTarget target;
    target.key = request->fingerprint;
    target.path = request->path;
    target.ensure = [dataset, request](const BuildControl& control) {
      return EnsureStateCacheFile(*request, control).built;
    };
    return target;
  };
}

class ServiceFixture : public ::testing::Test {
 protected:
  void Start(ServiceOptions options) {
    root_ = testing::FreshDir("service");
    testing::WriteTinyProblem(root_, 120);
    options.cache_dir = root_ / "cache";
    if (options.listen.empty()) options.socket_path = root_ / "s.sock";
    service_ = std::make_unique<CacheService>(options, TinyResolver(options.cache_dir));
    thread_ = std::thread([this] { service_->Run(); });
  }
  void TearDown() override {
    if (service_) service_->Stop();
    if (thread_.joinable()) thread_.join();
    service_.reset();
  }
  nlohmann::json Call(const nlohmann::json& request) { return CallCacheService(service_->endpoint(), request); }
  nlohmann::json Ensure() { return Call({{"op", "ensure"}, {"config", {{"root", root_.string()}}}}); }

  // Sends raw bytes on one connection and reads `replies` lines back.
  std::vector<nlohmann::json> Raw(const std::vector<std::string>& sends) {
    asio::io_context io;
    asio::local::stream_protocol::socket socket(io);
    socket.connect(asio::local::stream_protocol::endpoint((root_ / "s.sock").string()));
    std::vector<nlohmann::json> replies;
    std::string buffer;
    for (const auto& bytes : sends) {
      boost::system::error_code error;
      asio::write(socket, asio::buffer(bytes), error);
      const size_t n = asio::read_until(socket, asio::dynamic_buffer(buffer), '\n', error);
      if (n == 0) break;
      replies.push_back(nlohmann::json::parse(buffer.substr(0, n)));
      buffer.erase(0, n);
    }
    return replies;
  }

  std::filesystem::path root_;
  std::unique_ptr<CacheService> service_;
  std::thread thread_;
};

TEST_F(ServiceFixture, EightConcurrentEnsuresOfOneKeyRunOneBuild) {
  Start({});
  std::vector<nlohmann::json> replies(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) clients.emplace_back([&, i] { replies[i] = Ensure(); });
  for (auto& client : clients) client.join();
  int built = 0;
  for (const auto& reply : replies) {
    ASSERT_TRUE(reply["ok"].get<bool>()) << reply.dump();
    EXPECT_EQ(reply["path"], replies[0]["path"]);
    built += reply["built"].get<bool>();
  }
  EXPECT_EQ(built, 1);
  const auto status = Call({{"op", "status"}});
  EXPECT_EQ(status["builds_run"], 1) << status.dump();
  EXPECT_TRUE(status["builds"].empty());
  const auto key = replies[0]["key"].get<std::string>();
  EXPECT_EQ(ReadStateFileHeader(replies[0]["path"].get<std::string>()).fingerprint, key);

  // Ensure by key finds it; list shows it; evict removes it; then the key is unknown.
  const auto by_key = Call({{"op", "ensure"}, {"key", key}});
  EXPECT_TRUE(by_key["ok"].get<bool>()) << by_key.dump();
  EXPECT_EQ(by_key["path"], replies[0]["path"]);
  const auto list = Call({{"op", "list"}});
  ASSERT_EQ(list["caches"].size(), 1u) << list.dump();
  EXPECT_EQ(list["caches"][0]["key"], key);
  EXPECT_EQ(list["caches"][0]["items"], testing::LoadTinyDataset(root_).num_items());
  EXPECT_TRUE(Call({{"op", "evict"}, {"key", key}})["ok"].get<bool>());
  EXPECT_FALSE(std::filesystem::exists(replies[0]["path"].get<std::string>()));
  EXPECT_FALSE(Call({{"op", "ensure"}, {"key", key}})["ok"].get<bool>());
  // A second ensure after eviction builds again.
  EXPECT_TRUE(Ensure()["built"].get<bool>());
  EXPECT_EQ(Call({{"op", "status"}})["builds_run"], 2);
}

TEST_F(ServiceFixture, MalformedAndOversizedRequestsGetErrorsAndTheServiceKeepsServing) {
  ServiceOptions options;
  options.max_request_bytes = 1024;
  Start(options);
  const auto replies = Raw({"this is not json\n", "{\"op\":\"reboot\"}\n", "{\"op\":\"status\"}\n",
                            "{\"op\":\"ensure\",\"config\":{\"root\":\"/nonexistent/x\"}}\n"});
  ASSERT_EQ(replies.size(), 4u);
  EXPECT_FALSE(replies[0]["ok"].get<bool>());
  EXPECT_NE(replies[0]["error"].get<std::string>().find("malformed JSON"), std::string::npos);
  EXPECT_NE(replies[1]["error"].get<std::string>().find("unknown op"), std::string::npos);
  EXPECT_TRUE(replies[2]["ok"].get<bool>()) << "the same connection keeps working after errors";
  EXPECT_FALSE(replies[3]["ok"].get<bool>()) << "a spec that cannot be resolved is an error reply";

  const auto oversized = Raw({std::string(100000, 'x') + "\n", "{\"op\":\"status\"}\n"});
  ASSERT_GE(oversized.size(), 1u);
  EXPECT_FALSE(oversized[0]["ok"].get<bool>());
  EXPECT_NE(oversized[0]["error"].get<std::string>().find("exceeds 1024 bytes"), std::string::npos);
  EXPECT_EQ(oversized.size(), 1u) << "the connection of an oversized request is closed";
  EXPECT_TRUE(Call({{"op", "status"}})["ok"].get<bool>()) << "new connections are served";
}

TEST_F(ServiceFixture, TcpWithATokenServesOnlyRequestsThatCarryIt) {
  ServiceOptions options;
  options.listen = "127.0.0.1:0";
  options.token = "s3cret";
  Start(options);
  EXPECT_EQ(service_->endpoint().rfind("127.0.0.1:", 0), 0u) << service_->endpoint();
  const auto refused = Call({{"op", "status"}});
  EXPECT_FALSE(refused["ok"].get<bool>());
  EXPECT_NE(refused["error"].get<std::string>().find("token"), std::string::npos);
  EXPECT_FALSE(Call({{"op", "status"}, {"token", "wrong!"}})["ok"].get<bool>());
  EXPECT_TRUE(Call({{"op", "status"}, {"token", "s3cret"}})["ok"].get<bool>());
}

TEST(ServiceTest, ANonLoopbackAddressNeedsAToken) {
  ServiceOptions options;
  options.listen = "0.0.0.0:0";
  options.cache_dir = ::testing::TempDir();
  try {
    CacheService service(options, TinyResolver(options.cache_dir));
    FAIL() << "a service on every interface started without a token";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find("token"), std::string::npos) << error.what();
  }
  options.listen = "127.0.0.1:notaport";
  EXPECT_THROW(CacheService(options, TinyResolver(options.cache_dir)), CacheError);
  EXPECT_THROW(CallCacheService(std::string(::testing::TempDir()) + "/absent.sock", {{"op", "status"}}), CacheError);
}

}  // namespace
}  // namespace iisan::cache
