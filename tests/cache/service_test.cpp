// The cache service over real sockets with the real builder: concurrent identical ensure
// requests run one build; malformed and oversized requests get error replies and the service
// keeps serving; tokens guard it; list, status, evict and ensure-by-key. Hostile and broken
// peers: silent connections are closed, connections past the cap refused, clients time out on
// a service that never answers, paths out of the cache folder and file contents stay private.
#include "cache/service.h"

#include <sys/stat.h>

#include <array>
#include <functional>
#include <future>
#include <thread>

#include <boost/asio.hpp>
#include <gtest/gtest.h>
#include <torch/torch.h>

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

// Whether the peer of `socket` closes it within `timeout` (reading whatever it sends first).
template <class Socket>
bool ClosedByPeerWithin(asio::io_context& io, Socket& socket, std::chrono::milliseconds timeout) {
  std::array<char, 4096> scratch{};
  bool closed = false;
  std::function<void()> read = [&] {
    socket.async_read_some(asio::buffer(scratch), [&](const boost::system::error_code& error, size_t) {
      if (!error) return read();
      closed = error != asio::error::operation_aborted;  // aborted: our own close at the time limit
    });
  };
  read();
  io.restart();
  io.run_for(timeout);
  boost::system::error_code ignored;
  socket.close(ignored);
  io.restart();
  io.run();
  return closed;
}

class ServiceFixture : public ::testing::Test {
 protected:
  void Start(ServiceOptions options, SpecResolver resolver = nullptr) {
    root_ = testing::FreshDir("service");
    testing::WriteTinyProblem(root_, 120);
    options.cache_dir = root_ / "cache";
    if (options.listen.empty()) options.socket_path = root_ / "s.sock";
    service_ = std::make_unique<CacheService>(options, resolver ? resolver : TinyResolver(options.cache_dir));
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
  for (const char* wrong : {"wrong!", "s3cre", "s3cret!", "S3cret", ""}) {
    EXPECT_FALSE(Call({{"op", "status"}, {"token", wrong}})["ok"].get<bool>()) << wrong;
  }
  EXPECT_TRUE(Call({{"op", "status"}, {"token", "s3cret"}})["ok"].get<bool>());
}

TEST_F(ServiceFixture, TheUnixSocketIsTheOwnersOnly) {
  Start({});
  struct stat status {};
  ASSERT_EQ(::stat((root_ / "s.sock").c_str(), &status), 0);
  EXPECT_TRUE(S_ISSOCK(status.st_mode));
  EXPECT_EQ(status.st_mode & 0777, 0600u);
}

// A connection that sends nothing, or half a request, is closed after the idle timeout; other
// clients are served meanwhile and afterwards.
TEST_F(ServiceFixture, SilentAndHalfSentConnectionsAreClosedAndOthersServed) {
  ServiceOptions options;
  options.idle_timeout = std::chrono::milliseconds(300);
  Start(options);
  asio::io_context io;
  const asio::local::stream_protocol::endpoint address((root_ / "s.sock").string());
  asio::local::stream_protocol::socket silent(io), half(io);
  silent.connect(address);
  half.connect(address);
  asio::write(half, asio::buffer(std::string("{\"op\":\"sta")));
  EXPECT_TRUE(Call({{"op", "status"}})["ok"].get<bool>()) << "served while two connections idle";
  EXPECT_TRUE(ClosedByPeerWithin(io, silent, std::chrono::seconds(20))) << "a silent connection stayed open";
  EXPECT_TRUE(ClosedByPeerWithin(io, half, std::chrono::seconds(20))) << "a half-sent request stayed open";
  EXPECT_TRUE(Call({{"op", "status"}})["ok"].get<bool>());
}

// More connections than the cap: the extra one gets a "busy" error reply and is closed, a client
// gives up on it after its connect timeout, and once connections close the service serves again.
TEST_F(ServiceFixture, ConnectionsPastTheCapAreRefusedAndTheServiceKeepsServing) {
  ServiceOptions options;
  options.max_connections = 2;
  Start(options);
  asio::io_context io;
  const asio::local::stream_protocol::endpoint address((root_ / "s.sock").string());
  std::vector<std::unique_ptr<asio::local::stream_protocol::socket>> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(std::make_unique<asio::local::stream_protocol::socket>(io));
    held.back()->connect(address);
  }
  const auto refused = Raw({"{\"op\":\"status\"}\n", "{\"op\":\"status\"}\n"});
  ASSERT_EQ(refused.size(), 1u) << "the refused connection is closed after its reply";
  EXPECT_FALSE(refused[0]["ok"].get<bool>());
  EXPECT_TRUE(refused[0]["busy"].get<bool>());
  EXPECT_NE(refused[0]["error"].get<std::string>().find("maximum of 2 connections"), std::string::npos)
      << refused[0].dump();

  ServiceCallOptions quick;
  quick.connect_timeout = std::chrono::milliseconds(300);
  try {
    CallCacheService(service_->endpoint(), {{"op", "status"}}, quick);
    ADD_FAILURE() << "served past the connection cap";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find(service_->endpoint()), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("connection cap"), std::string::npos) << error.what();
  }
  held.clear();  // closes them: the service sees the ends and frees their places
  const auto status = Call({{"op", "status"}});  // retried while the service catches up
  EXPECT_TRUE(status["ok"].get<bool>()) << status.dump();
}

// While a build runs longer than the client's reply timeout, heartbeat lines keep the client
// waiting; it gets the reply when the build is done.
TEST_F(ServiceFixture, HeartbeatsCarryAClientThroughABuildLongerThanItsReplyTimeout) {
  ServiceOptions options;
  options.heartbeat = std::chrono::milliseconds(50);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Start(options, [this, released](const nlohmann::json& spec) {
    auto target = TinyResolver(root_ / "cache")(spec);
    target.ensure = [released, build = target.ensure](const BuildControl& control) {
      released.wait();  // the build starts when the test says so
      return build(control);
    };
    return target;
  });
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    release.set_value();
  });
  ServiceCallOptions patient;
  patient.reply_timeout = std::chrono::milliseconds(500);
  nlohmann::json reply;
  try {
    reply = CallCacheService(service_->endpoint(), {{"op", "ensure"}, {"config", {{"root", root_.string()}}}}, patient);
  } catch (const CacheError& error) {
    ADD_FAILURE() << "the client gave up during the build: " << error.what();
  }
  releaser.join();
  if (reply.is_null()) return;
  EXPECT_TRUE(reply["ok"].get<bool>()) << reply.dump();
  EXPECT_TRUE(reply["built"].get<bool>());
}

// A listener that accepts but never answers (a stuck service, or something else on the port):
// the client gives up after its reply timeout with an error naming the address.
TEST(ServiceClientTest, AListenerThatNeverRepliesTimesOutNamingTheAddress) {
  const auto dir = testing::FreshDir("mute");
  asio::io_context io;
  const auto path = (dir / "mute.sock").string();
  asio::local::stream_protocol::acceptor acceptor(io, asio::local::stream_protocol::endpoint(path));
  asio::ip::tcp::acceptor tcp(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::vector<std::unique_ptr<asio::local::stream_protocol::socket>> accepted_local;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> accepted_tcp;
  std::thread acceptor_thread([&] {
    accepted_local.push_back(std::make_unique<asio::local::stream_protocol::socket>(acceptor.accept()));
    accepted_tcp.push_back(std::make_unique<asio::ip::tcp::socket>(tcp.accept()));
  });
  ServiceCallOptions options;
  options.connect_timeout = std::chrono::milliseconds(2000);
  options.reply_timeout = std::chrono::milliseconds(300);
  const std::string tcp_endpoint = "127.0.0.1:" + std::to_string(tcp.local_endpoint().port());
  for (const std::string& endpoint : {"unix:" + path, tcp_endpoint}) {
    auto call = std::async(std::launch::async, [&] { return CallCacheService(endpoint, {{"op", "status"}}, options); });
    if (call.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << endpoint << ": the client still waits after 30 s";
      boost::system::error_code ignored;
      acceptor.close(ignored);
      tcp.close(ignored);
      for (auto& socket : accepted_local) socket->close(ignored);
      for (auto& socket : accepted_tcp) socket->close(ignored);
    }
    try {
      call.get();
      ADD_FAILURE() << endpoint << ": a reply from a listener that never writes";
    } catch (const CacheError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("cache service " + endpoint), std::string::npos) << message;
      EXPECT_NE(message.find("sent no reply within 0.3 s"), std::string::npos) << message;
      EXPECT_NE(message.find("restart it"), std::string::npos) << message;
    }
  }
  acceptor_thread.join();
}

// A cache file that is a symbolic link out of the cache folder is not served, even when it is a
// valid cache of the key asked for; nor is a target the resolver places outside.
TEST_F(ServiceFixture, CachesOutsideTheCacheFolderAreRefusedNamingTheKey) {
  Start({});
  std::filesystem::create_directories(root_ / "cache");
  const std::string key = "00112233445566aa";
  const auto outside = root_ / "elsewhere" / "c.h5";
  {
    StateFileWriter writer(outside, {"", "A"}, 1, 3, 0);
    writer.WriteRows("text", 1, torch::ones({1, 1, 3}));
    writer.Commit(key, nlohmann::json::object());
  }
  std::filesystem::create_symlink(outside, root_ / "cache" / (key + ".h5"));
  const auto reply = Call({{"op", "ensure"}, {"key", key}});
  EXPECT_FALSE(reply["ok"].get<bool>()) << reply.dump();
  const std::string error = reply.value("error", "");
  EXPECT_NE(error.find("key " + key), std::string::npos) << error;
  EXPECT_NE(error.find("not inside the cache folder"), std::string::npos) << error;
  const auto list = Call({{"op", "list"}});
  ASSERT_EQ(list["caches"].size(), 1u) << list.dump();
  EXPECT_EQ(list["caches"][0]["status"], "broken") << "listed, not read: " << list.dump();
}

TEST_F(ServiceFixture, ARedirectedTargetIsRefusedNamingTheKey) {
  Start({}, [this](const nlohmann::json& spec) {
    auto target = TinyResolver(root_ / "cache")(spec);
    target.path = root_ / "cache" / ".." / (target.key + ".h5");
    return target;
  });
  const auto reply = Ensure();
  EXPECT_FALSE(reply["ok"].get<bool>()) << reply.dump();
  EXPECT_NE(reply.value("error", "").find("not inside the cache folder"), std::string::npos) << reply.dump();
  EXPECT_NE(reply.value("error", "").find("key "), std::string::npos) << reply.dump();
  for (const auto& entry : std::filesystem::directory_iterator(root_)) {
    EXPECT_NE(entry.path().extension(), ".h5") << "built outside the cache folder: " << entry.path();
  }
}

// An input file that the build reads on the client's behalf is named in the error, its text never
// quoted: the client may not be allowed to read it.
TEST_F(ServiceFixture, ErrorRepliesNeverQuoteFileContents) {
  Start({});
  // Unterminated: the parser's own message would quote the whole string read so far.
  testing::WriteText(root_ / "text/config.json", "{\"hidden_size\": 16, \"s3cretword-of-the-file: 1}");
  const auto reply = Ensure();
  EXPECT_FALSE(reply["ok"].get<bool>()) << reply.dump();
  const std::string error = reply.value("error", "");
  EXPECT_NE(error.find((root_ / "text/config.json").string()), std::string::npos) << error;
  EXPECT_NE(error.find("not valid JSON"), std::string::npos) << error;
  EXPECT_EQ(error.find("s3cret"), std::string::npos) << error;
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
