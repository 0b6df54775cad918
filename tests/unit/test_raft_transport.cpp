// zctl's raft transport on real loopback sockets: wire compatibility with
// libraft's stock raft_uv_tcp in both directions, socket options, the connect
// timeout, handshake parsing, cancellation on close, and two raft nodes
// electing a leader over it. Everything runs on 127.0.0.1 and takes
// milliseconds; the sanitizer build checks that every path frees its memory.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "raft_transport.hpp"
#include "temp_dir.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using zctl::RaftTransportOptions;

namespace {

// One libuv loop per test. The destructor fails the test if a handle was left
// open, so a leaked stream or timer shows up here even without ASan.
struct Loop {
  uv_loop_t loop{};
  uv_timer_t tick{};
  Loop() {
    REQUIRE(uv_loop_init(&loop) == 0);
    uv_timer_init(&loop, &tick);
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    const auto deadline = Clock::now() + 2s;
    while (uv_loop_alive(&loop) && Clock::now() < deadline) uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  static void wake_up(uv_timer_t*) {}

  // Runs the loop until done() or the limit; the tick bounds each iteration.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 2000ms) {
    const auto deadline = Clock::now() + limit;
    uv_timer_start(&tick, wake_up, 2, 2);
    while (!done() && Clock::now() < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&tick);
    return done();
  }
  void run_for(std::chrono::milliseconds duration) {
    run_until([] { return false; }, duration);
  }
};

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  return addr;
}

int bound_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return ntohs(addr.sin_port);
}

// A port nothing listens on (bound and released; nothing else here races for it).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr = loopback(0);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const int port = bound_port(fd);
  ::close(fd);
  return port;
}

std::string local(int port) { return "127.0.0.1:" + std::to_string(port); }

void close_stream(uv_stream_t* stream) {
  uv_close(reinterpret_cast<uv_handle_t*>(stream), [](uv_handle_t* handle) { raft_free(handle); });
}

struct Accepted {
  raft_id id;
  std::string address;
  uv_stream_t* stream;
};

struct Endpoint;

struct Connected {
  raft_uv_connect req{};
  Endpoint* endpoint = nullptr;
  std::function<void(Connected&)> on_done;  // runs inside the transport's callback
  int calls = 0;
  int status = -1;
  uv_stream_t* stream = nullptr;
  Clock::time_point at{};
  int sequence = 0;  // order among callbacks, see Endpoint::sequence
};

// One transport, ours or libraft's stock one, with its callbacks recorded.
struct Endpoint {
  Loop& loop;
  const bool ours;
  const std::string address;  // the stock transport keeps a pointer to it
  raft_uv_transport transport{};
  std::vector<Accepted> accepted;
  bool close_requested = false;
  bool closed = false;
  int closed_sequence = 0;
  int* sequence;

  Endpoint(Loop& l, bool ours_transport, raft_id id, std::string addr, int* seq, RaftTransportOptions options = {})
      : loop(l), ours(ours_transport), address(std::move(addr)), sequence(seq) {
    const int rv =
        ours ? zctl::raft_transport_init(&transport, &loop.loop, options) : raft_uv_tcp_init(&transport, &loop.loop);
    REQUIRE(rv == 0);
    transport.data = this;
    REQUIRE(transport.init(&transport, id, address.c_str()) == 0);
  }
  ~Endpoint() {
    for (const Accepted& a : accepted)
      if (a.stream != nullptr) close_stream(a.stream);
    if (!close_requested) close();
    if (ours)
      zctl::raft_transport_close(&transport);
    else
      raft_uv_tcp_close(&transport);
  }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  int listen() {
    return transport.listen(&transport, [](raft_uv_transport* t, raft_id id, const char* addr, uv_stream_t* stream) {
      static_cast<Endpoint*>(t->data)->accepted.push_back({id, addr, stream});
    });
  }

  int connect(Connected& c, raft_id id, const std::string& to) {
    c.req.data = &c;
    c.endpoint = this;
    return transport.connect(&transport, &c.req, id, to.c_str(),
                             [](raft_uv_connect* req, uv_stream_t* stream, int status) {
                               auto& result = *static_cast<Connected*>(req->data);
                               ++result.calls;
                               result.status = status;
                               result.stream = stream;
                               result.at = Clock::now();
                               result.sequence = ++*result.endpoint->sequence;
                               if (result.on_done) result.on_done(result);
                             });
  }

  void request_close() {
    close_requested = true;
    transport.close(&transport, [](raft_uv_transport* t) {
      auto* self = static_cast<Endpoint*>(t->data);
      self->closed = true;
      self->closed_sequence = ++*self->sequence;
    });
  }

  // Closes the transport; returns whether the close callback fired in time.
  bool close() {
    if (!close_requested) request_close();
    return loop.run_until([this] { return closed; });
  }

  // Hands an accepted stream back to the test, which closes it.
  uv_stream_t* take_accepted(std::size_t i) {
    uv_stream_t* stream = accepted.at(i).stream;
    accepted.at(i).stream = nullptr;
    return stream;
  }
};

// Writes `payload` on `from` and reads it back on `to`: proves that the
// handshake left the stream exactly at the first byte written after it.
void expect_transfer(Loop& loop, uv_stream_t* from, uv_stream_t* to, const std::string& payload) {
  struct Reader {
    std::string data;
    char buf[16384];
  } reader;
  to->data = &reader;
  REQUIRE(uv_read_start(
              to,
              [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
                auto* r = static_cast<Reader*>(h->data);
                *buf = uv_buf_init(r->buf, sizeof r->buf);
              },
              [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                if (nread > 0) static_cast<Reader*>(s->data)->data.append(buf->base, static_cast<std::size_t>(nread));
              }) == 0);
  uv_write_t write{};
  int write_status = 1;
  write.data = &write_status;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(payload.data()), static_cast<unsigned>(payload.size()));
  REQUIRE(uv_write(&write, from, &buf, 1, [](uv_write_t* w, int status) { *static_cast<int*>(w->data) = status; }) ==
          0);
  REQUIRE(loop.run_until([&] { return write_status != 1 && reader.data.size() >= payload.size(); }));
  CHECK(write_status == 0);
  uv_read_stop(to);
  to->data = nullptr;
  CHECK(reader.data == payload);  // NOLINT: one comparison, big strings
}

std::string pattern(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return s;
}

int fd_of(uv_stream_t* stream) {
  uv_os_fd_t fd = -1;
  REQUIRE(uv_fileno(reinterpret_cast<uv_handle_t*>(stream), &fd) == 0);
  return fd;
}

int int_option(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof value;
  REQUIRE(getsockopt(fd, level, name, &value, &len) == 0);
  return value;
}

// The handshake as documented by libraft's uv_tcp_connect.c, encoded here
// independently of the transport: three little-endian uint64 (protocol, id,
// address buffer size), then the address NUL-padded to a multiple of 8.
std::string handshake_bytes(std::uint64_t protocol, std::uint64_t id, const std::string& address) {
  const std::size_t padded = (address.size() + 1 + 7) / 8 * 8;
  std::string out;
  for (std::uint64_t v : {protocol, id, static_cast<std::uint64_t>(padded)})
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  out += address;
  out.append(padded - address.size(), '\0');
  return out;
}

// A plain blocking client socket for feeding handcrafted handshakes.
struct RawClient {
  int fd = -1;
  explicit RawClient(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr = loopback(port);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~RawClient() { ::close(fd); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  void send(const std::string& bytes) { REQUIRE(::send(fd, bytes.data(), bytes.size(), 0) == ssize_t(bytes.size())); }
  bool peer_closed() {
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
};

// A listener whose accept queue is full: Linux drops further SYNs
// (tcp_abort_on_overflow=0), so a connect to it hangs like one into a silent
// partition. listen(0) holds one connection; the filler takes it.
struct BlackHole {
  int listener = -1;
  int filler = -1;
  int port = 0;
  BlackHole() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listener >= 0);
    sockaddr_in addr = loopback(0);
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener, 0) == 0);
    port = bound_port(listener);
    filler = socket(AF_INET, SOCK_STREAM, 0);
    addr = loopback(port);
    REQUIRE(::connect(filler, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~BlackHole() {
    ::close(filler);
    ::close(listener);
  }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
};

constexpr raft_id kBigId = 0x1122334455667788ULL;  // catches a 32-bit or big-endian id
// 17 characters: the address buffer needs padding (18 -> 24 bytes).
const std::string kOddAddress = "127.0.0.123:45678";

}  // namespace

TEST_CASE("raft transport: the stock raft_uv_tcp connects to ours", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  Endpoint server(loop, true, 1, local(free_port()), &seq);
  REQUIRE(server.listen() == 0);
  Endpoint client(loop, false, kBigId, kOddAddress, &seq);
  Connected c;
  REQUIRE(client.connect(c, 1, server.address) == 0);
  REQUIRE(loop.run_until([&] { return c.calls == 1 && server.accepted.size() == 1; }));
  REQUIRE(c.status == 0);
  CHECK(server.accepted[0].id == kBigId);
  CHECK(server.accepted[0].address == kOddAddress);

  uv_stream_t* in = server.take_accepted(0);
  expect_transfer(loop, c.stream, in, pattern(300 * 1024));
  expect_transfer(loop, in, c.stream, "and back");
  // The stock side really sets nothing: the option checks below can fail.
  CHECK(int_option(fd_of(c.stream), IPPROTO_TCP, TCP_NODELAY) == 0);
  CHECK(int_option(fd_of(c.stream), IPPROTO_TCP, TCP_USER_TIMEOUT) == 0);
  close_stream(in);
  close_stream(c.stream);
  CHECK(server.close());
  CHECK(client.close());
  CHECK(c.calls == 1);
}

TEST_CASE("raft transport: ours connects to a stock raft_uv_tcp listener", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  Endpoint server(loop, false, 1, local(free_port()), &seq);
  REQUIRE(server.listen() == 0);
  Endpoint client(loop, true, kBigId, kOddAddress, &seq);
  Connected c;
  REQUIRE(client.connect(c, 1, server.address) == 0);
  REQUIRE(loop.run_until([&] { return c.calls == 1 && server.accepted.size() == 1; }));
  REQUIRE(c.status == 0);
  REQUIRE(c.stream != nullptr);
  CHECK(server.accepted[0].id == kBigId);
  CHECK(server.accepted[0].address == kOddAddress);

  uv_stream_t* in = server.take_accepted(0);
  expect_transfer(loop, c.stream, in, pattern(300 * 1024));
  close_stream(in);
  close_stream(c.stream);
  CHECK(client.close());
  CHECK(server.close());
}

TEST_CASE("raft transport: ours sends byte for byte the stock handshake", "[raft_transport]") {
  // The stock listener reads whatever length is announced, so interop alone
  // would not notice a wrong padding; pin the exact bytes.
  Loop loop;
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr = loopback(0);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 4) == 0);
  int seq = 0;
  Endpoint client(loop, true, kBigId, kOddAddress, &seq);
  Connected c;
  REQUIRE(client.connect(c, 1, local(bound_port(listener))) == 0);
  REQUIRE(loop.run_until([&] { return c.calls == 1; }));
  REQUIRE(c.status == 0);
  const int peer = accept(listener, nullptr, nullptr);
  REQUIRE(peer >= 0);
  const std::string expected = handshake_bytes(1, kBigId, kOddAddress);
  REQUIRE(expected.size() == 48);      // 24 + "127.0.0.123:45678\0" padded to 24
  const timeval limit{0, 200 * 1000};  // a short handshake must fail, not hang
  REQUIRE(setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0);
  std::string got(expected.size(), '\0');
  const ssize_t n = recv(peer, got.data(), got.size(), MSG_WAITALL);
  got.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  CHECK(got == expected);
  char extra;
  CHECK(recv(peer, &extra, 1, MSG_DONTWAIT) == -1);  // and not a byte more
  ::close(peer);
  ::close(listener);
  close_stream(c.stream);
  CHECK(client.close());
}

TEST_CASE("raft transport: a burst of peers connecting at once is accepted without SYN retries", "[raft_transport]") {
  // What happens when a partition heals. With raft_uv_tcp's backlog of 1,
  // the kernel drops the extra SYNs and those peers wait a 1 s retransmission.
  Loop loop;
  int seq = 0;
  Endpoint server(loop, true, 1, local(free_port()), &seq);
  REQUIRE(server.listen() == 0);
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq);
  std::vector<Connected> connects(8);
  const auto start = Clock::now();
  for (Connected& c : connects) REQUIRE(client.connect(c, 1, server.address) == 0);
  const auto all_done = [&] {
    for (const Connected& c : connects)
      if (c.calls == 0) return false;
    return server.accepted.size() == connects.size();
  };
  REQUIRE(loop.run_until(all_done, 3000ms));
  CHECK(Clock::now() - start < 500ms);
  for (Connected& c : connects) {
    CHECK(c.status == 0);
    if (c.stream != nullptr) close_stream(c.stream);
  }
  CHECK(client.close());
  CHECK(server.close());
}

TEST_CASE("raft transport: both ends of a connection carry our socket options", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  RaftTransportOptions options;
  options.user_timeout_ms = 1234;
  options.keepalive_idle_s = 7;
  Endpoint server(loop, true, 1, local(free_port()), &seq, options);
  REQUIRE(server.listen() == 0);
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq, options);
  Connected c;
  REQUIRE(client.connect(c, 1, server.address) == 0);
  REQUIRE(loop.run_until([&] { return c.calls == 1 && server.accepted.size() == 1; }));
  REQUIRE(c.status == 0);
  CHECK(server.accepted[0].id == 2);
  CHECK(server.accepted[0].address == "127.0.0.1:1");

  uv_stream_t* in = server.take_accepted(0);
  for (uv_stream_t* stream : {c.stream, in}) {
    const int fd = fd_of(stream);
    CHECK(int_option(fd, IPPROTO_TCP, TCP_NODELAY) == 1);
    CHECK(int_option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 7);
    CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 7);
    CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPCNT) == 3);
    CHECK(int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 1234);
  }
  expect_transfer(loop, c.stream, in, "hello");
  close_stream(in);
  close_stream(c.stream);
  CHECK(client.close());
  CHECK(server.close());
}

TEST_CASE("raft transport: a connect that hangs fails with RAFT_NOCONNECTION after the timeout", "[raft_transport]") {
  Loop loop;
  BlackHole hole;
  int seq = 0;
  RaftTransportOptions options;
  options.connect_timeout_ms = 100;
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq, options);
  Connected c;
  const auto start = Clock::now();
  REQUIRE(client.connect(c, 1, local(hole.port)) == 0);
  REQUIRE(loop.run_until([&] { return c.calls > 0; }, 1500ms));
  const auto elapsed = c.at - start;
  CHECK(c.status == RAFT_NOCONNECTION);
  CHECK(c.stream == nullptr);
  // Not at once, and not late. libuv arms timers from the loop's cached
  // time, which can lag the clock read above by several ms under load.
  CHECK(elapsed >= 50ms);
  CHECK(elapsed < 500ms);
  CHECK(std::string(client.transport.errmsg).find("no handshake within 100 ms") != std::string::npos);
  loop.run_for(20ms);
  CHECK(c.calls == 1);
  CHECK(client.close());
}

TEST_CASE("raft transport: a refused connect fails at once, not at the timeout", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq);  // 1000 ms timeout
  Connected c;
  const auto start = Clock::now();
  REQUIRE(client.connect(c, 1, local(free_port())) == 0);
  REQUIRE(loop.run_until([&] { return c.calls > 0; }, 900ms));
  CHECK(c.status == RAFT_NOCONNECTION);
  CHECK(c.at - start < 200ms);
  CHECK(client.close());
  CHECK(c.calls == 1);
}

TEST_CASE("raft transport: close cancels connects in flight before reporting closed", "[raft_transport]") {
  Loop loop;
  BlackHole hole;
  int seq = 0;
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq);
  Connected hanging, refused, just_started;
  REQUIRE(client.connect(hanging, 1, local(hole.port)) == 0);
  REQUIRE(client.connect(refused, 3, local(free_port())) == 0);
  loop.run_for(20ms);
  REQUIRE(hanging.calls == 0);
  REQUIRE(refused.calls == 1);
  CHECK(refused.status == RAFT_NOCONNECTION);
  REQUIRE(client.connect(just_started, 4, local(free_port())) == 0);  // its refusal not yet seen
  REQUIRE(client.close());
  for (Connected* c : {&hanging, &just_started}) {
    CHECK(c->calls == 1);
    CHECK(c->status == RAFT_CANCELED);
    CHECK(c->stream == nullptr);
    CHECK(c->sequence < client.closed_sequence);  // raft frees the request in it
  }
  loop.run_for(10ms);
  CHECK(hanging.calls == 1);
  CHECK(just_started.calls == 1);
}

TEST_CASE("raft transport: close from inside the connect callback", "[raft_transport]") {
  // The connect's timer is still closing when raft gets the stream; a close
  // requested right there must wait for it, and fire once.
  Loop loop;
  int seq = 0;
  Endpoint server(loop, true, 1, local(free_port()), &seq);
  REQUIRE(server.listen() == 0);
  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq);
  Connected c;
  c.on_done = [&](Connected&) {
    client.request_close();
    CHECK_FALSE(client.closed);
  };
  REQUIRE(client.connect(c, 1, server.address) == 0);
  REQUIRE(loop.run_until([&] { return client.closed; }));
  REQUIRE(c.calls == 1);
  REQUIRE(c.status == 0);
  CHECK(c.sequence < client.closed_sequence);
  close_stream(c.stream);
  REQUIRE(loop.run_until([&] { return server.accepted.size() == 1; }));
  CHECK(server.close());
}

TEST_CASE("raft transport: close from inside a failed connect's callback, freed in the close callback",
          "[raft_transport]") {
  // raft_uv's pattern: the connect callback may lead to the transport's
  // close, and the close callback may free it; nothing of ours may run after.
  Loop loop;
  struct State {
    raft_uv_transport transport{};
    raft_uv_connect req{};
    int status = -1;
    bool closed = false;
    bool closed_inside_callback = false;
  } st;
  REQUIRE(zctl::raft_transport_init(&st.transport, &loop.loop) == 0);
  st.transport.data = &st;
  st.req.data = &st;
  REQUIRE(st.transport.init(&st.transport, 2, "127.0.0.1:1") == 0);
  const std::string refused = local(free_port());
  REQUIRE(st.transport.connect(&st.transport, &st.req, 1, refused.c_str(),
                               [](raft_uv_connect* req, uv_stream_t*, int status) {
                                 auto* state = static_cast<State*>(req->data);
                                 state->status = status;
                                 state->transport.close(&state->transport, [](raft_uv_transport* t) {
                                   auto* inner = static_cast<State*>(t->data);
                                   zctl::raft_transport_close(t);
                                   inner->closed = true;
                                 });
                                 state->closed_inside_callback = state->closed;
                               }) == 0);
  REQUIRE(loop.run_until([&] { return st.closed; }));
  CHECK(st.status == RAFT_NOCONNECTION);
  CHECK_FALSE(st.closed_inside_callback);
}

TEST_CASE("raft transport: the listener reassembles a handshake that arrives in pieces", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  const int port = free_port();
  Endpoint server(loop, true, 1, local(port), &seq);
  REQUIRE(server.listen() == 0);
  RawClient raw(port);
  const std::string hs = handshake_bytes(1, 42, "10.1.2.3:9001");
  for (std::size_t i = 0; i + 1 < hs.size(); ++i) {
    raw.send(hs.substr(i, 1));
    loop.run_for(1ms);
  }
  CHECK(server.accepted.empty());                // not before the last byte
  raw.send(hs.substr(hs.size() - 1) + "after");  // raft's first bytes in the same segment
  REQUIRE(loop.run_until([&] { return server.accepted.size() == 1; }));
  CHECK(server.accepted[0].id == 42);
  CHECK(server.accepted[0].address == "10.1.2.3:9001");
  CHECK(server.close());
  // The accepted stream outlives the transport; raft reads it after the handshake.
  uv_stream_t* in = server.take_accepted(0);
  struct Reader {
    std::string data;
    char buf[64];
  } reader;
  in->data = &reader;
  uv_read_start(
      in,
      [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* r = static_cast<Reader*>(h->data);
        *buf = uv_buf_init(r->buf, sizeof r->buf);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        if (nread > 0) static_cast<Reader*>(s->data)->data.append(buf->base, static_cast<std::size_t>(nread));
      });
  CHECK(loop.run_until([&] { return reader.data.size() >= 5; }));
  CHECK(reader.data == "after");
  close_stream(in);
}

TEST_CASE("raft transport: the listener drops a peer with a bad handshake", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  const int port = free_port();
  Endpoint server(loop, true, 1, local(port), &seq);
  REQUIRE(server.listen() == 0);

  SECTION("unknown protocol version") {
    RawClient raw(port);
    raw.send(handshake_bytes(2, 7, "127.0.0.1:9"));
    CHECK(loop.run_until([&] { return raw.peer_closed(); }));
  }
  SECTION("absurd address length") {
    RawClient raw(port);
    std::string hs = handshake_bytes(1, 7, "127.0.0.1:9");
    hs[16 + 5] = 1;  // length += 2^40
    raw.send(hs);
    CHECK(loop.run_until([&] { return raw.peer_closed(); }));
  }
  SECTION("hang-up in the middle of the address") {
    {
      RawClient raw(port);
      raw.send(handshake_bytes(1, 7, "127.0.0.1:9").substr(0, 28));
      loop.run_for(10ms);
    }
    loop.run_for(10ms);
  }
  SECTION("address without a terminating NUL") {
    RawClient raw(port);
    std::string hs = handshake_bytes(1, 7, "1.2.3.4:5");  // 10 bytes, padded to 16
    hs.replace(24, 16, "1.2.3.4:56789012");               // all 16 used, no NUL
    raw.send(hs);
    REQUIRE(loop.run_until([&] { return server.accepted.size() == 1; }));
    CHECK(server.accepted[0].address == "1.2.3.4:56789012");  // cut at the announced length
    close_stream(server.take_accepted(0));
    server.accepted.clear();
  }
  CHECK(server.accepted.empty());
  // A good handshake still works afterwards.
  RawClient good(port);
  good.send(handshake_bytes(1, 8, "127.0.0.1:10"));
  REQUIRE(loop.run_until([&] { return server.accepted.size() == 1; }));
  CHECK(server.accepted[0].id == 8);
  CHECK(server.close());
}

TEST_CASE("raft transport: close frees connections still in their handshake", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  const int port = free_port();
  Endpoint server(loop, true, 1, local(port), &seq);
  REQUIRE(server.listen() == 0);
  RawClient silent(port);
  RawClient partial(port);
  partial.send(handshake_bytes(1, 9, "127.0.0.1:11").substr(0, 30));  // preamble and part of the address
  loop.run_for(20ms);
  REQUIRE(server.close());
  CHECK(server.accepted.empty());
  CHECK(loop.run_until([&] { return silent.peer_closed() && partial.peer_closed(); }));
}

TEST_CASE("raft transport: bad addresses and a busy port are reported synchronously", "[raft_transport]") {
  Loop loop;
  int seq = 0;
  BlackHole busy;  // any bound port
  Endpoint server(loop, true, 1, local(busy.port), &seq);
  CHECK(server.listen() == RAFT_IOERR);
  CHECK(std::string(server.transport.errmsg).find("in use") != std::string::npos);

  Endpoint client(loop, true, 2, "127.0.0.1:1", &seq);
  Connected c;
  for (const char* bad : {"localhost:9000", "127.0.0.1:x", "127.0.0.1:70000", "1.2.3:4", "127.0.0.1:"}) {
    INFO(bad);
    CHECK(client.connect(c, 1, bad) == RAFT_NOCONNECTION);
  }
  Endpoint bad_listener(loop, true, 3, "not-an-address:1", &seq);
  CHECK(bad_listener.listen() == RAFT_INVALID);
  CHECK(server.close());
  CHECK(client.close());
  CHECK(bad_listener.close());
  CHECK(c.calls == 0);

  raft_uv_transport t{};
  RaftTransportOptions options;
  options.keepalive_idle_s = 40000;
  CHECK(zctl::raft_transport_init(&t, &loop.loop, options) == RAFT_INVALID);
}

namespace {

// Minimal raft node on our transport, for the end-to-end election check.
struct RaftNode {
  zctl::test::TempDir dir;
  raft_uv_transport transport{};
  raft_io io{};
  raft_fsm fsm{};
  struct raft node {};
  bool closed = false;

  RaftNode(Loop& loop, raft_id id, const std::string& address, const raft_configuration& configuration) {
    REQUIRE(zctl::raft_transport_init(&transport, &loop.loop) == 0);
    REQUIRE(raft_uv_init(&io, &loop.loop, dir.path.c_str(), &transport) == 0);
    fsm.version = 1;
    fsm.apply = [](raft_fsm*, const raft_buffer*, void** result) {
      *result = nullptr;
      return 0;
    };
    REQUIRE(raft_init(&node, &io, &fsm, id, address.c_str()) == 0);
    raft_set_election_timeout(&node, 100);
    raft_set_heartbeat_timeout(&node, 20);
    REQUIRE(raft_bootstrap(&node, &configuration) == 0);
    REQUIRE(raft_start(&node) == 0);
    node.data = this;
  }
  void close() {
    raft_close(&node, [](struct raft* r) {
      auto* self = static_cast<RaftNode*>(r->data);
      raft_uv_close(&self->io);
      zctl::raft_transport_close(&self->transport);
      self->closed = true;
    });
  }
};

}  // namespace

TEST_CASE("raft transport: two raft nodes elect a leader over it", "[raft_transport]") {
  // Two nodes in one process share libraft's globals (rand, tracing); fine
  // for a test, one node per process in production.
  Loop loop;
  const std::string a = local(free_port()), b = local(free_port());
  raft_configuration configuration;
  raft_configuration_init(&configuration);
  REQUIRE(raft_configuration_add(&configuration, 1, a.c_str(), RAFT_VOTER) == 0);
  REQUIRE(raft_configuration_add(&configuration, 2, b.c_str(), RAFT_VOTER) == 0);
  RaftNode n1(loop, 1, a, configuration);
  RaftNode n2(loop, 2, b, configuration);
  raft_configuration_close(&configuration);

  // Two voters: a leader needs the other's vote, so a message went each way.
  const auto agreed = [&] {
    raft_id l1 = 0, l2 = 0;
    const char* unused;
    raft_leader(&n1.node, &l1, &unused);
    raft_leader(&n2.node, &l2, &unused);
    return l1 != 0 && l1 == l2;
  };
  CHECK(loop.run_until(agreed, 3000ms));
  const int leaders = (raft_state(&n1.node) == RAFT_LEADER) + (raft_state(&n2.node) == RAFT_LEADER);
  CHECK(leaders == 1);
  n1.close();
  n2.close();
  CHECK(loop.run_until([&] { return n1.closed && n2.closed; }));
}
