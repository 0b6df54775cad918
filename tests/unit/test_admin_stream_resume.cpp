// The event stream of a node that restarted: its journal starts empty and its
// seq continues from the previous run, and a `zctl watch` resumes with
// since=<last seq it printed>, possibly before the node has emitted anything.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "admin_server.hpp"
#include "temp_dir.hpp"
#include "zctl/core/config.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/seq_store.hpp"
#include "zctl/core/sink_host.hpp"

namespace {

using namespace std::chrono_literals;

// A connected socket to 127.0.0.1:port whose reads give up after `timeout`.
int connect_to(const std::string& address, std::chrono::milliseconds timeout) {
  const auto colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  timeval tv{};
  tv.tv_sec = static_cast<long>(timeout.count() / 1000);
  tv.tv_usec = static_cast<long>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Reads until `needle` has arrived or a read times out; returns all read.
std::string read_until(int fd, const std::string& needle, std::string got = {}) {
  char buf[4096];
  while (got.find(needle) == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;  // timeout, end or error
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A node's event path after a clean restart whose previous run ended at seq 8.
struct RestartedNode {
  zctl::test::TempDir dir;
  boost::asio::io_context io{1};
  zctl::MetricsRegistry metrics;
  std::unique_ptr<zctl::SeqStore> seq;
  zctl::Journal journal{64};
  std::unique_ptr<zctl::EventBus> bus;
  zctl::PluginHost plugins{std::vector<std::string>{}};
  std::unique_ptr<zctl::SinkHost> sinks;
  std::unique_ptr<zctl::AdminServer> admin;
  std::thread io_thread;

  RestartedNode() {
    std::ofstream(dir.file("seq")) << "zctl-seq 1 reserved=1000008 last=8 clean=1\n";
    seq = std::make_unique<zctl::SeqStore>(dir.file("seq"));
    bus = std::make_unique<zctl::EventBus>("n1", *seq, journal, metrics);
    sinks = std::make_unique<zctl::SinkHost>(plugins, metrics, *bus);
    sinks->start({});
    admin = std::make_unique<zctl::AdminServer>(io, journal, metrics, *sinks, [] { return zctl::Readiness{}; }, "");
    admin->listen("127.0.0.1:0", zctl::TlsConfig{});
    bus->attach(admin.get());
  }
  void run() { io_thread = std::thread([this] { io.run(); }); }
  ~RestartedNode() {
    bus->detach(admin.get());
    std::promise<void> stopped;
    boost::asio::post(io, [&] {
      admin->stop();
      stopped.set_value();
    });
    if (!io_thread.joinable()) run();
    stopped.get_future().wait();
    io_thread.join();
    sinks->stop(1s);
  }
};

const std::string kResume =
    "GET /v1/events?since=8 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 8\r\nAccept: text/event-stream\r\n\r\n";

}  // namespace

TEST_CASE("a stream resumed before a restarted node emitted anything gets its first events at once", "[sse]") {
  RestartedNode node;
  node.run();
  REQUIRE(node.journal.size() == 0);
  // Well under the 15 s keepalive, so a lost wake-up cannot pass unnoticed.
  const int fd = connect_to(node.admin->local_address(), 3000ms);
  REQUIRE(::send(fd, kResume.data(), kResume.size(), 0) == static_cast<ssize_t>(kResume.size()));
  // The head goes out after the session's first (empty) read: from here on
  // it waits for a wake-up.
  const std::string head_end = "retry: 1000\n\n";
  std::string got = read_until(fd, head_end);
  REQUIRE(got.find("HTTP/1.1 200 OK") == 0);
  REQUIRE(got.find("event: gap") == std::string::npos);

  node.bus->emit("node", "started", zctl::EventFields());
  got = read_until(fd, "\n\n", got.substr(got.find(head_end) + head_end.size()));
  CHECK(got.find("id: 9\nevent: node/started\n") == 0);

  // Later events, from another thread as the raft loop emits them.
  std::thread([&] {
    node.bus->emit("cluster", "state.has_leader", zctl::EventFields());
    node.bus->emit("cluster", "leadership.gained", zctl::EventFields());
  }).join();
  got = read_until(fd, "event: cluster/leadership.gained", got);
  CHECK(got.find("id: 10\nevent: cluster/state.has_leader\n") != std::string::npos);
  CHECK(got.find("id: 11\nevent: cluster/leadership.gained\n") != std::string::npos);
  ::close(fd);
}

TEST_CASE("a stream resumed while a restarting node is still starting gets what it emitted before serving", "[sse]") {
  // The admin port listens before node/started is emitted and before the io
  // loop runs: a reconnect lands in the listen backlog and is served after.
  RestartedNode node;
  const int fd = connect_to(node.admin->local_address(), 3000ms);
  REQUIRE(::send(fd, kResume.data(), kResume.size(), 0) == static_cast<ssize_t>(kResume.size()));
  node.bus->emit("node", "started", zctl::EventFields());
  node.run();
  std::string got = read_until(fd, "event: node/started");
  CHECK(got.find("event: gap") == std::string::npos);
  CHECK(got.find("id: 9\nevent: node/started\n") != std::string::npos);
  node.bus->emit("cluster", "state.has_leader", zctl::EventFields());
  got = read_until(fd, "event: cluster/state.has_leader", got);
  CHECK(got.find("id: 10\nevent: cluster/state.has_leader\n") != std::string::npos);
  ::close(fd);
}
