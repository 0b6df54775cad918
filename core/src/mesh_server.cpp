#include "mesh_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/basic_stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include "accept_queue_clock.hpp"
#include "deadline_queue.hpp"
#include "membership.hpp"
#include "mesh_protocol.hpp"
#include "net_address.hpp"
#include "stray_reporter.hpp"
#include "tls_context.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/metrics.hpp"

namespace zctl {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
// Sockets bound to the io_context's own executor type: a polymorphic
// executor would cost ~40 bytes in every socket and every pending
// operation, and a flood holds tens of thousands of both.
using Socket = asio::basic_stream_socket<tcp, asio::io_context::executor_type>;
using Acceptor = asio::basic_socket_acceptor<tcp, asio::io_context::executor_type>;
using Descriptor = asio::posix::basic_stream_descriptor<asio::io_context::executor_type>;

bool join_token_matches(const std::string& presented, const std::string& expected) {
  // Comparing digests keeps the time independent of where the strings
  // differ and of their lengths.
  std::array<unsigned char, SHA256_DIGEST_LENGTH> a{};
  std::array<unsigned char, SHA256_DIGEST_LENGTH> b{};
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), a.data());
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b.data());
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {

constexpr size_t kSharedReadBufferBytes = 64 * 1024;
constexpr size_t kTlsReadBufferBytes = 16 * 1024;
// A joined peer that stops reading: its unsent frames are capped, then the
// session is closed rather than buffering without bound.
constexpr size_t kMaxQueuedOutputBytes = 1 << 20;
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
constexpr auto kRejectSummaryPeriod = std::chrono::seconds(1);
constexpr size_t kSummarySourcesShown = 10;
constexpr size_t kExpiriesPerTurn = 64;
// Deadlines falling due closer together than this are handled in one
// wake-up: a flood accepted at 50 000/s has a deadline every 20 us, about
// what one timer wake-up (timerfd, epoll, context switch) costs. Not
// measured on its own; it bounds the wake-ups to 1000/s for 1 ms of
// lateness at most.
constexpr auto kExpiryCoalescing = std::chrono::milliseconds(1);
constexpr size_t kAcceptsPerTurn = 64;
constexpr auto kStrayHandoverRetry = std::chrono::microseconds(500);
constexpr size_t kQuietEventsPerTurn = 64;

enum class Outcome { normal, abnormal };

// Connections waiting in a listen socket's accept queue: TCP_INFO of a
// listener reports them in tcpi_unacked. Nullopt when it cannot tell.
std::optional<uint64_t> accept_queue_length(int listener) {
  tcp_info info{};
  auto length = static_cast<socklen_t>(sizeof(info));
  if (::getsockopt(listener, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 ||
      length < offsetof(tcp_info, tcpi_unacked) + sizeof(info.tcpi_unacked) || info.tcpi_state != TCP_LISTEN) {
    return std::nullopt;
  }
  return info.tcpi_unacked;
}

// A source address as a hash key (IPv4 as v4-mapped IPv6).
struct SourceKey {
  uint64_t high = 0;
  uint64_t low = 0;
  bool operator==(const SourceKey&) const = default;
};

struct SourceKeyHash {
  size_t operator()(const SourceKey& key) const noexcept {
    return std::hash<uint64_t>{}(key.high * 0x9E3779B97F4A7C15ull ^ key.low);
  }
};

SourceKey source_key(const asio::ip::address& address) {
  const auto v6 = address.is_v4() ? asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4()) : address.to_v6();
  const auto bytes = v6.to_bytes();
  SourceKey key;
  std::memcpy(&key.high, bytes.data(), 8);
  std::memcpy(&key.low, bytes.data() + 8, 8);
  return key;
}

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

std::string join_list(const std::set<std::string>& items) {
  std::string out = "[";
  for (const auto& item : items) {
    if (out.size() > 1) out += ',';
    json::append_string(out, item);
  }
  return out + "]";
}

}  // namespace

class MeshConnection;

struct MeshServer::Impl {
  Impl(MeshServerSettings s, EventBus& b, MetricsRegistry& m, MembershipAuthority& a);

  void accept_loop();
  void accept_ready();
  void accept_failed(int error);
  void on_accepted(int fd, const tcp::endpoint& peer, SteadyClock::time_point established_by);
  void count_for_flood(const asio::ip::address& address, const SourceKey& source);
  void refuse_too_many_pending(int fd, const tcp::endpoint& peer, std::string_view limit);
  void watch_quiet();
  void on_quiet_ready();
  // A connection phase with a shared timeout: its queue and the one timer
  // armed at the queue's front.
  struct PhaseDeadlines {
    PhaseDeadlines(asio::io_context& context, Duration timeout, void (MeshConnection::*handler)())
        : queue(timeout), timer(context), on_expired(handler) {}
    DeadlineQueue queue;
    asio::steady_timer timer;
    SteadyClock::time_point armed_at{};  // zero: not armed
    SteadyClock::time_point last_expiry{};
    void (MeshConnection::*on_expired)();
  };
  // Inserts (or moves) a connection into `phase`, its deadline counted from
  // `start`, and arms the phase's timer if needed.
  void enter(PhaseDeadlines& phase, MeshConnection& connection, SteadyClock::time_point start = SteadyClock::now());
  void arm(PhaseDeadlines& phase);
  void expire(PhaseDeadlines& phase);
  void send_heartbeats();
  void sweep_flood_windows();
  void stop_on_io_thread();

  MeshServerSettings settings;
  EventBus& bus;
  MembershipAuthority& membership;

  asio::io_context io{1};
  Acceptor acceptor{io.get_executor()};
  tcp::endpoint listen_endpoint;
  std::optional<ssl::context> tls;
  std::thread thread;
  bool stopping = false;  // io thread

  // When each accepted connection's handshake completed, at the latest:
  // the grace period runs from there, not from whenever this thread got to
  // the backlog. Looked at once per accept turn.
  AcceptQueueClock accept_clock;
  asio::steady_timer accept_retry{io};
  asio::steady_timer heartbeat_timer{io};
  asio::steady_timer flood_sweep_timer{io};
  asio::steady_timer reject_summary_timer{io};
  bool heartbeat_running = false;
  bool flood_sweep_running = false;

  // See deadline_queue.hpp. pending: the stray grace period from accept;
  // joined: the idle timeout, renewed by every frame; closing: the linger
  // after a refusal.
  PhaseDeadlines pending;
  PhaseDeadlines joined;
  PhaseDeadlines closing;

  std::unique_ptr<char[]> read_buffer{new char[kSharedReadBufferBytes]};

  // Connections that have not shown a byte (or a TLS ClientHello) yet are
  // kept out of asio: a raw descriptor in an epoll set of the server's own,
  // which the io_context watches as one descriptor. An idle connection thus
  // holds no reactor registration and no pending operation, and closing it
  // at its deadline is one close(): no epoll_ctl(DEL) and no cancelled
  // handler -- most of what a flood of strays cost per connection. On its
  // first readiness a connection moves to its asio socket for good.
  // Entries are one-shot and keyed by descriptor through quiet_by_fd, so an
  // event of a descriptor closed meanwhile (its registration outliving the
  // close in a forked child) is dropped or, with the number reused, at
  // worst moves that newer connection to asio early.
  Descriptor quiet_watch{io.get_executor()};
  asio::steady_timer quiet_retry{io};
  std::vector<MeshConnection*> quiet_by_fd;

  // Every live connection, for stop(): an intrusive list (no allocation
  // per connection); each connection unlinks itself when it closes.
  MeshConnection* connections = nullptr;
  bool local_address_is_fixed = false;  // listening on one address, not 0.0.0.0 / ::
  size_t pending_count = 0;
  std::unordered_map<SourceKey, uint32_t, SourceKeyHash> pending_per_source;
  std::unordered_map<std::string, MeshConnection*> joined_by_id;

  struct FloodWindow {
    SteadyClock::time_point start;
    uint64_t connections = 0;
    bool reported = false;
  };
  std::unordered_map<SourceKey, FloodWindow, SourceKeyHash> flood_windows;

  struct RejectSummary {
    uint64_t count = 0;
    std::string first_remote;
    std::set<std::string> sources;
    std::set<std::string> limits;
  } too_many_pending;
  bool reject_summary_armed = false;
  void emit_reject_summary();

  // Logs and emits connection/stray off this thread; started before the
  // accept loop, stopped (draining) after the thread has joined.
  StrayReporter stray_reporter;
  std::vector<StrayReport> strays_to_report;  // this expiry turn's, one hand-over for all
  asio::steady_timer stray_handover_retry{io};
  bool stray_handover_retrying = false;
  void hand_over_strays();

  // Metrics, looked up once.
  Family<Counter>& stray_total;
  // stray_total's children for this node's action, by step: no label
  // lookup (a vector of strings and the family's lock) per stray.
  std::array<std::pair<std::string_view, Counter*>, 4> strays_by_step{};
  Counter& stray_counter(std::string_view step);
  Family<Counter>& rejections_total;
  Family<Counter>& protocol_errors_total;
  Histogram& duration_normal;
  Histogram& duration_abnormal;
  Gauge& pending_gauge;
  Gauge& joined_gauge;
  Counter& accepted_total;
  Counter& floods_total;
  Family<Counter>& accept_errors_total;
};

// One accepted mesh connection, from accept to close. Owned by the async
// operations in flight through an intrusive count (4 bytes, where a
// shared_ptr costs a control block and a weak pointer: a flood holds tens of
// thousands); the server links it in its list until it closes. Everything
// runs on the server's io thread; the count is atomic only because a
// membership decision may be made, and dropped, on another thread.
class MeshConnection : public DeadlineHook {
 public:
  enum class Phase { tls_handshake, handshake, deciding, joined, closing, closed };

  // Takes ownership of `fd`, an accepted non-blocking socket whose TCP
  // handshake had completed by `accepted_at` (see AcceptQueueClock).
  MeshConnection(MeshServer::Impl& server, int fd, const tcp::endpoint& peer, SteadyClock::time_point accepted_at)
      : server_(server), socket_(server.io.get_executor()), peer_(peer), accepted_at_(accepted_at), quiet_fd_(fd) {}

  friend void intrusive_ptr_add_ref(MeshConnection* c) { c->refs_.fetch_add(1, std::memory_order_relaxed); }
  friend void intrusive_ptr_release(MeshConnection* c) {
    if (c->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
  }
  boost::intrusive_ptr<MeshConnection> self() { return boost::intrusive_ptr<MeshConnection>(this); }

  void start();
  // The quiet set reported the descriptor ready: moves the connection to its
  // asio socket. Adopts the reference the quiet set held.
  void leave_quiet();
  void on_grace_expired();
  void on_idle_timeout();
  void on_linger_expired() { close_socket(); }
  void send_heartbeat();
  void abort_for_shutdown();

  SourceKey source() const { return source_key(peer_.address()); }
  MeshConnection* next_connection = nullptr;  // Impl::connections, io thread
  MeshConnection* prev_connection = nullptr;

 private:
  // Everything a connection needs once it talks: created on the first byte
  // (or the first frame sent), so an idle connection carries none of it.
  struct Handshake {
    explicit Handshake(const MeshServer::Impl& s)
        : parser(s.settings.mesh.max_frame_bytes), machine(s.settings.node_id, s.settings.cluster_id) {}
    mesh::FrameParser parser;
    mesh::HandshakeMachine machine;
    std::string out;             // frames waiting for the write in flight
    std::string writing;         // the write in flight
    uint64_t heartbeat_sequence = 0;
    std::unique_ptr<char[]> tls_buffer;
  };
  Handshake& active();

  void begin_talking();
  void read_more();
  void leave_pending();
  void on_bytes(const char* data, size_t n);
  void on_peer_closed();
  void on_frame(const mesh::Frame& frame);
  void decide_join();
  void on_decision(JoinDecision decision);
  // `step`: where the handshake was when the error arrived (the machine
  // has already moved to closed by the time it reports one).
  void protocol_error(const mesh::FrameError& error, const std::optional<mesh::Message>& reply,
                      std::string_view step);
  void rejected(std::string_view reason, std::string_view detail);
  void send(const mesh::Message& message, std::optional<uint8_t> version = std::nullopt);
  void flush();
  void close_after_reply(Outcome outcome);
  void finish(Outcome outcome);
  void close_socket();
  std::string remote_addr() const { return format_endpoint(peer_); }
  std::string local_addr() { return format_endpoint(local_endpoint()); }
  tcp::endpoint local_endpoint();
  std::chrono::system_clock::time_point connected_at() const;
  std::string_view pending_step() const;
  uint8_t frame_version() const;

  std::atomic<uint32_t> refs_{0};
  MeshServer::Impl& server_;
  Socket socket_;
  std::unique_ptr<ssl::stream<Socket&>> tls_;
  std::unique_ptr<Handshake> hs_;
  tcp::endpoint peer_;
  SteadyClock::time_point accepted_at_;
  int quiet_fd_ = -1;  // the descriptor while quiet; then socket_ owns it
  uint64_t bytes_in_ = 0;
  Phase phase_ = Phase::handshake;
  Outcome outcome_ = Outcome::abnormal;
  bool counted_pending_ = false;
  bool registered_joined_ = false;
  bool read_pending_ = false;
  bool stray_reported_ = false;
  bool writing_ = false;
  bool finished_ = false;
};

// ---- MeshServer::Impl ------------------------------------------------------

MeshServer::Impl::Impl(MeshServerSettings s, EventBus& b, MetricsRegistry& m, MembershipAuthority& a)
    : settings(std::move(s)), bus(b), membership(a), pending(io, settings.mesh.stray.grace_period, &MeshConnection::on_grace_expired),
      joined(io, settings.session_timeout, &MeshConnection::on_idle_timeout),
      closing(io, settings.linger, &MeshConnection::on_linger_expired),
      stray_reporter(b, settings.mesh.stray),
      stray_total(m.counter("controller_stray_connections_total",
                            "Mesh connections that did not finish the join within the grace period.",
                            {"action", "step"})),
      rejections_total(m.counter("controller_connection_rejections_total",
                                 "Mesh connections refused, by reason.", {"reason"})),
      protocol_errors_total(m.counter("controller_protocol_errors_total",
                                      "Mesh connections closed on a protocol error, by reason.", {"reason"})),
      duration_normal(m.histogram("controller_connection_duration_seconds",
                                  "Mesh connections from accept to close; normal = joined members, "
                                  "abnormal = stray, rejected, protocol error.",
                                  {"outcome"}, MetricsRegistry::duration_buckets())
                          .with({"normal"})),
      duration_abnormal(m.histogram("controller_connection_duration_seconds", "", {"outcome"},
                                    MetricsRegistry::duration_buckets())
                            .with({"abnormal"})),
      pending_gauge(m.gauge("controller_mesh_connections", "Open mesh connections by state.", {"state"})
                        .with({"pending"})),
      joined_gauge(m.gauge("controller_mesh_connections", "", {"state"}).with({"joined"})),
      accepted_total(m.counter("controller_mesh_accepted_connections_total", "TCP connections accepted on the mesh port.")
                         .with({})),
      floods_total(m.counter("controller_connection_floods_total",
                             "Windows in which one source opened more than mesh.flood.max_connections_per_source "
                             "connections.")
                       .with({})),
      accept_errors_total(m.counter("controller_mesh_accept_errors_total",
                                    "Failed accept() calls on the mesh port, by errno name.", {"reason"})) {
  const char* action = to_string(settings.mesh.stray.action).data();
  size_t i = 0;
  for (const char* step : {"tls_handshake", "hello", "join", "membership"}) {
    strays_by_step[i++] = {step, &stray_total.with({action, step})};
  }
}

void MeshServer::Impl::accept_loop() {
  acceptor.async_wait(Acceptor::wait_read, [this](const boost::system::error_code& ec) {
    if (stopping || ec == asio::error::operation_aborted) return;
    accept_ready();  // a failed wait shows again in accept4(), which counts and backs off
  });
}

// accept4() directly rather than asio's accept: an accepted descriptor
// starts quiet (see Impl::quiet_watch), and asio would register it at once.
void MeshServer::Impl::accept_ready() {
  if (const auto queued = accept_queue_length(acceptor.native_handle())) {
    accept_clock.looked(*queued, SteadyClock::now());
  }
  for (size_t i = 0; i < kAcceptsPerTurn && !stopping; ++i) {
    tcp::endpoint peer;
    auto length = static_cast<socklen_t>(peer.capacity());
    const int fd = ::accept4(acceptor.native_handle(), peer.data(), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) {
        accept_clock.drained();
        accept_loop();
        return;
      }
      if (error == EINTR) continue;
      if (error == ECONNABORTED) {
        // That peer is gone, the backlog is not. It left the queue's front:
        // counted, or the clock would take later connections for earlier
        // ones (counting one too many only makes their clocks start later).
        accept_clock.accepted(SteadyClock::now());
        continue;
      }
      accept_failed(error);
      return;
    }
    peer.resize(length);
    on_accepted(fd, peer, accept_clock.accepted(SteadyClock::now()));
  }
  // A full turn: the backlog may hold more. Connections already accepted
  // get to run before the next turn.
  asio::post(io, [this] {
    if (!stopping) accept_ready();
  });
}

void MeshServer::Impl::accept_failed(int error) {
  const char* name = strerrorname_np(error);
  accept_errors_total.with({name != nullptr ? name : std::to_string(error)}).inc();
  // Out of descriptors (or memory): back off instead of spinning; the
  // connections waiting in the backlog are accepted once some close.
  log_warn(std::string("mesh: accept failed: ") + std::strerror(error) + "; retrying in " +
           format_duration(kAcceptRetryDelay));
  accept_retry.expires_after(kAcceptRetryDelay);
  accept_retry.async_wait([this](const boost::system::error_code& e) {
    if (!e && !stopping) accept_ready();
  });
}

void MeshServer::Impl::watch_quiet() {
  quiet_watch.async_wait(Descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (stopping || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Not seen; retried rather than left dead, since every idle
      // connection's first byte arrives through this wait.
      log_error("mesh: waiting on idle connections failed: " + ec.message() + "; retrying in " +
                format_duration(kAcceptRetryDelay));
      quiet_retry.expires_after(kAcceptRetryDelay);
      quiet_retry.async_wait([this](const boost::system::error_code& e) {
        if (!e && !stopping) on_quiet_ready();
      });
      return;
    }
    on_quiet_ready();
  });
}

void MeshServer::Impl::on_quiet_ready() {
  std::array<epoll_event, kQuietEventsPerTurn> events{};
  const int n = ::epoll_wait(quiet_watch.native_handle(), events.data(), static_cast<int>(events.size()), 0);
  for (int i = 0; i < n; ++i) {
    const auto fd = static_cast<size_t>(events[static_cast<size_t>(i)].data.u64);
    MeshConnection* connection = fd < quiet_by_fd.size() ? quiet_by_fd[fd] : nullptr;
    if (connection != nullptr) connection->leave_quiet();  // nullptr: closed meanwhile, see quiet_watch
  }
  if (n == static_cast<int>(events.size())) {
    asio::post(io, [this] {
      if (!stopping) on_quiet_ready();
    });
  } else {
    watch_quiet();
  }
}

// Counts connections per source and window; one connection/flood event per
// window for a source over the limit.
void MeshServer::Impl::count_for_flood(const asio::ip::address& address, const SourceKey& source) {
  const auto now = SteadyClock::now();
  auto& window = flood_windows[source];
  if (window.connections == 0 || now - window.start >= settings.mesh.flood.window) {
    window = FloodWindow{now, 0, false};
  }
  ++window.connections;
  if (!flood_sweep_running) {
    flood_sweep_running = true;
    flood_sweep_timer.expires_after(settings.mesh.flood.window);
    flood_sweep_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && !stopping) sweep_flood_windows();
    });
  }
  if (window.connections > settings.mesh.flood.max_connections_per_source && !window.reported) {
    window.reported = true;
    floods_total.inc();
    const std::string src = address.to_string();
    log_warn("mesh: " + src + " opened more than " + std::to_string(settings.mesh.flood.max_connections_per_source) +
             " connections within " + format_duration(settings.mesh.flood.window));
    bus.emit("connection", "flood",
             EventFields()
                 .add("source", src)
                 .add("connections", window.connections)
                 .add("window", format_duration(settings.mesh.flood.window))
                 .add("windowMs", static_cast<int64_t>(settings.mesh.flood.window.count()))
                 .add("limit", settings.mesh.flood.max_connections_per_source));
  }
}

void MeshServer::Impl::sweep_flood_windows() {
  const auto now = SteadyClock::now();
  for (auto it = flood_windows.begin(); it != flood_windows.end();) {
    if (now - it->second.start >= settings.mesh.flood.window) {
      it = flood_windows.erase(it);
    } else {
      ++it;
    }
  }
  flood_sweep_running = false;
  if (!flood_windows.empty()) {
    flood_sweep_running = true;
    flood_sweep_timer.expires_after(settings.mesh.flood.window);
    flood_sweep_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && !stopping) sweep_flood_windows();
    });
  }
}

void MeshServer::Impl::on_accepted(int fd, const tcp::endpoint& peer, SteadyClock::time_point established_by) {
  accepted_total.inc();
  const SourceKey source = source_key(peer.address());
  count_for_flood(peer.address(), source);
  if (pending_count >= settings.mesh.max_pending) {
    refuse_too_many_pending(fd, peer, "max_pending");
    return;
  }
  const auto per_source = pending_per_source.find(source);
  if (per_source != pending_per_source.end() && per_source->second >= settings.mesh.max_pending_per_source) {
    refuse_too_many_pending(fd, peer, "max_pending_per_source");
    return;
  }
  boost::intrusive_ptr<MeshConnection> connection(new MeshConnection(*this, fd, peer, established_by));
  connection->start();
}

void MeshServer::Impl::refuse_too_many_pending(int fd, const tcp::endpoint& peer, std::string_view limit) {
  rejections_total.with({"too_many_pending"}).inc();
  duration_abnormal.observe(0);
  if (!tls) {
    // Best effort, never waits: a real joining node learns why; a flood
    // does not get to hold the server's attention.
    const std::string frame =
        mesh::encode(mesh::Rejected{"too_many_pending", std::string(limit) + " reached; try again later"});
    [[maybe_unused]] const ssize_t sent = ::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  ::close(fd);
  // One summary event per period, not one per connection.
  ++too_many_pending.count;
  if (too_many_pending.first_remote.empty()) too_many_pending.first_remote = format_endpoint(peer);
  if (too_many_pending.sources.size() < kSummarySourcesShown) too_many_pending.sources.insert(peer.address().to_string());
  too_many_pending.limits.insert(std::string(limit));
  if (!reject_summary_armed) {
    reject_summary_armed = true;
    reject_summary_timer.expires_after(kRejectSummaryPeriod);
    reject_summary_timer.async_wait([this](const boost::system::error_code&) { emit_reject_summary(); });
  }
}

void MeshServer::Impl::emit_reject_summary() {
  reject_summary_armed = false;
  if (too_many_pending.count == 0) return;
  RejectSummary summary = std::exchange(too_many_pending, RejectSummary{});
  log_warn("mesh: refused " + std::to_string(summary.count) + " connection(s) in the last second: too many pending (" +
           *summary.limits.begin() + ")");
  bus.emit("connection", "rejected",
           EventFields()
               .add("remoteAddr", summary.first_remote)
               .add("reason", "too_many_pending")
               .add("detail", "limit reached: " + join_list(summary.limits))
               .add("count", summary.count)
               .add_raw("sources", join_list(summary.sources))
               .add("periodMs", static_cast<int64_t>(
                                    std::chrono::duration_cast<std::chrono::milliseconds>(kRejectSummaryPeriod).count())));
}

Counter& MeshServer::Impl::stray_counter(std::string_view step) {
  for (const auto& [name, counter] : strays_by_step) {
    if (name == step) return *counter;
  }
  return stray_total.with({std::string(to_string(settings.mesh.stray.action)), std::string(step)});
}

void MeshServer::Impl::enter(PhaseDeadlines& phase, MeshConnection& connection, SteadyClock::time_point start) {
  if (phase.queue.push(connection, start)) arm(phase);
}

void MeshServer::Impl::arm(PhaseDeadlines& phase) {
  const auto next = phase.queue.next_deadline();
  if (!next) return;
  // A timer armed at or before the front's deadline fires in time and
  // re-arms itself, so most insertions cost no timer operation at all.
  if (phase.armed_at != SteadyClock::time_point{} && phase.armed_at <= *next) return;
  const auto at = std::max(*next, phase.last_expiry + kExpiryCoalescing);
  phase.armed_at = at;
  phase.timer.expires_at(at);
  phase.timer.async_wait([this, &phase](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted || stopping) return;
    phase.armed_at = SteadyClock::time_point{};
    expire(phase);
  });
}

void MeshServer::Impl::expire(PhaseDeadlines& phase) {
  const auto now = SteadyClock::now();
  phase.last_expiry = now;
  // Bounded batches: when a flood's deadlines fall due together, joins and
  // accepts queued behind them get a turn between batches.
  for (size_t handled = 0; handled < kExpiriesPerTurn; ++handled) {
    DeadlineHook* hook = phase.queue.pop_expired(now);
    if (hook == nullptr) {
      hand_over_strays();
      arm(phase);
      return;
    }
    (static_cast<MeshConnection*>(hook)->*phase.on_expired)();
  }
  hand_over_strays();
  phase.armed_at = now;  // keeps arm() from adding a timer wait while the rest is posted
  asio::post(io, [this, &phase] {
    if (stopping) return;
    phase.armed_at = SteadyClock::time_point{};
    expire(phase);
  });
}

void MeshServer::Impl::hand_over_strays() {
  if (strays_to_report.empty() || stray_handover_retrying) return;
  if (stray_reporter.try_report(strays_to_report)) return;
  // The reporter holds its lock (perhaps preempted): keep the reports and
  // try again shortly rather than wait; later expiries join them.
  stray_handover_retrying = true;
  stray_handover_retry.expires_after(kStrayHandoverRetry);
  stray_handover_retry.async_wait([this](const boost::system::error_code& ec) {
    stray_handover_retrying = false;
    if (!ec && !stopping) hand_over_strays();
  });
}

void MeshServer::Impl::send_heartbeats() {
  heartbeat_running = false;
  if (joined_by_id.empty() || stopping) return;
  for (const auto& [id, connection] : joined_by_id) connection->send_heartbeat();
  heartbeat_running = true;
  heartbeat_timer.expires_after(settings.heartbeat);
  heartbeat_timer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) send_heartbeats();
  });
}

void MeshServer::Impl::stop_on_io_thread() {
  stopping = true;
  boost::system::error_code ignored;
  acceptor.close(ignored);
  for (auto* timer : {&accept_retry, &pending.timer, &joined.timer, &closing.timer, &heartbeat_timer,
                      &flood_sweep_timer, &reject_summary_timer, &stray_handover_retry, &quiet_retry}) {
    timer->cancel();
  }
  emit_reject_summary();
  stray_reporter.report(strays_to_report);  // may wait now: nothing is due any more
  // abort_for_shutdown() unlinks the connection from `connections`.
  while (connections != nullptr) connections->abort_for_shutdown();
  quiet_watch.close(ignored);
}

// ---- MeshConnection --------------------------------------------------------

void MeshConnection::start() {
  next_connection = server_.connections;
  if (next_connection != nullptr) next_connection->prev_connection = this;
  server_.connections = this;
  counted_pending_ = true;
  ++server_.pending_count;
  ++server_.pending_per_source[source()];
  server_.pending_gauge.add(1);
  server_.enter(server_.pending, *this, accepted_at_);
  // An idle TLS connection is stalled at the TLS handshake, not at hello.
  if (server_.tls) phase_ = Phase::tls_handshake;

  epoll_event event{};
  event.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  event.data.u64 = static_cast<uint64_t>(quiet_fd_);
  if (::epoll_ctl(server_.quiet_watch.native_handle(), EPOLL_CTL_ADD, quiet_fd_, &event) == 0) {
    auto& slots = server_.quiet_by_fd;
    const auto slot = static_cast<size_t>(quiet_fd_);
    if (slots.size() <= slot) slots.resize(slot + 1);
    slots[slot] = this;
    intrusive_ptr_add_ref(this);  // the quiet set's; dropped by leave_quiet() or close_socket()
    return;
  }
  begin_talking();  // not watchable there (fs.epoll.max_user_watches?): through asio at once
}

void MeshConnection::leave_quiet() {
  const boost::intrusive_ptr<MeshConnection> held(this, false);
  server_.quiet_by_fd[static_cast<size_t>(quiet_fd_)] = nullptr;
  // The one-shot entry stays in the quiet set, disabled, until the
  // descriptor is closed: removing it would cost a syscall for nothing.
  try {
    begin_talking();
  } catch (const std::exception& e) {
    // SSL_new or an allocation failed: this connection ends here, while the
    // rest of the quiet set's batch still gets its turn. Closed while
    // `held` keeps it alive, so it leaves every list before it is freed.
    log_error("mesh: cannot start the connection from " + remote_addr() + ": " + e.what() + "; closing it");
    close_socket();
  }
}

void MeshConnection::begin_talking() {
  const int fd = std::exchange(quiet_fd_, -1);
  boost::system::error_code ec;
  socket_.assign(peer_.protocol(), fd, ec);
  if (ec) {  // the reactor could not register it; the descriptor is still ours
    ::close(fd);
    log_warn("mesh: cannot watch the connection from " + remote_addr() + ": " + ec.message() + "; closing it");
    close_socket();
    return;
  }
  // Tells asio the descriptor is non-blocking (accept4 made it so), or its
  // synchronous reads would wait in poll().
  socket_.non_blocking(true, ec);
  if (server_.tls) {
    tls_ = std::make_unique<ssl::stream<Socket&>>(socket_, *server_.tls);
    tls_->async_handshake(ssl::stream_base::server, [self = self()](const boost::system::error_code& e) {
      if (self->phase_ != Phase::tls_handshake) return;  // closed meanwhile (stray, shutdown)
      if (e) {
        self->rejected("tls_failed", "TLS handshake failed: " + e.message());
        return;
      }
      self->phase_ = Phase::handshake;
      self->read_more();
    });
    return;
  }
  read_more();
}

void MeshConnection::read_more() {
  if (phase_ >= Phase::closed || read_pending_) return;
  read_pending_ = true;
  if (tls_) {
    auto& buffer = active().tls_buffer;
    if (!buffer) buffer.reset(new char[kTlsReadBufferBytes]);
    tls_->async_read_some(asio::buffer(buffer.get(), kTlsReadBufferBytes),
                          [self = self()](const boost::system::error_code& ec, size_t n) {
                            self->read_pending_ = false;
                            if (self->phase_ >= Phase::closed) return;
                            if (n > 0) self->on_bytes(self->hs_->tls_buffer.get(), n);
                            if (self->phase_ >= Phase::closed) return;
                            if (ec) {
                              self->on_peer_closed();
                              return;
                            }
                            self->read_more();
                          });
    return;
  }
  // Plain TCP: wait for readability, then read into the thread's shared
  // buffer, so an idle connection owns no buffer at all.
  socket_.async_wait(Socket::wait_read, [self = self()](const boost::system::error_code& ec) {
    self->read_pending_ = false;
    if (self->phase_ >= Phase::closed) return;
    if (ec) {
      self->on_peer_closed();
      return;
    }
    for (;;) {
      boost::system::error_code e;
      const size_t n = self->socket_.read_some(asio::buffer(self->server_.read_buffer.get(), kSharedReadBufferBytes), e);
      if (n > 0) self->on_bytes(self->server_.read_buffer.get(), n);
      if (self->phase_ >= Phase::closed) return;
      if (e == asio::error::would_block || e == asio::error::try_again) break;
      if (e) {
        self->on_peer_closed();
        return;
      }
      if (n < kSharedReadBufferBytes) break;
    }
    self->read_more();
  });
}

void MeshConnection::on_bytes(const char* data, size_t n) {
  bytes_in_ += n;
  if (phase_ == Phase::closing) return;  // lingering: drain and discard
  active();
  std::string_view in(data, n);
  while (phase_ < Phase::closing) {
    const auto result = hs_->parser.feed(in);
    in.remove_prefix(result.consumed);
    if (result.has_frame()) {
      on_frame(result.frame);
      continue;
    }
    if (result.failed()) protocol_error(result.error, mesh::error_reply(result.error), pending_step());
    break;
  }
}

void MeshConnection::on_peer_closed() {
  if (phase_ == Phase::closing) {
    close_socket();
    return;
  }
  if (hs_ && !hs_->parser.failed()) {
    if (const auto error = hs_->parser.finish()) {  // the peer left mid-frame
      protocol_error(*error, std::nullopt, pending_step());
      return;
    }
  }
  if (phase_ == Phase::joined) log_info("mesh: member " + hs_->machine.peer_node_id() + " closed its session");
  finish(phase_ == Phase::joined ? Outcome::normal : Outcome::abnormal);
  close_socket();
}

void MeshConnection::on_frame(const mesh::Frame& frame) {
  const std::string_view step = pending_step();
  const auto outcome = hs_->machine.on_frame(frame);
  if (phase_ == Phase::joined) server_.joined.queue.touch(*this, SteadyClock::now());
  using Kind = mesh::HandshakeOutcome::Kind;
  switch (outcome.kind) {
    case Kind::none:
      return;
    case Kind::reply:
      send(*outcome.reply);
      return;
    case Kind::decide:
      decide_join();
      return;
    case Kind::rejected: {
      const auto& r = std::get<mesh::Rejected>(*outcome.reply);
      rejected(r.reason, r.detail);
      return;
    }
    case Kind::protocol_error:
      protocol_error(*outcome.error, outcome.reply, step);
      return;
  }
}

void MeshConnection::decide_join() {
  const auto& machine = hs_->machine;
  if (!join_token_matches(machine.join().token, server_.settings.join_token)) {
    rejected("bad_token", "the join token does not match");
    return;
  }
  if (server_.joined_by_id.count(machine.peer_node_id()) != 0) {
    rejected("duplicate_id", "node id " + machine.peer_node_id() + " already has a joined session");
    return;
  }
  phase_ = Phase::deciding;
  JoinRequest request{machine.peer_node_id(),    remote_addr(),
                      machine.join().raft_addr,  machine.join().mesh_addr,
                      machine.join().admin_addr, machine.protocol_version().value_or(0)};
  // Holds the connection until the decision is back; on_decision() ignores
  // it if the connection closed meanwhile.
  server_.membership.decide(request, [self = self(), &io = server_.io](JoinDecision decision) mutable {
    asio::post(io, [self = std::move(self), decision = std::move(decision)]() mutable {
      self->on_decision(std::move(decision));
    });
  });
}

void MeshConnection::on_decision(JoinDecision decision) {
  const std::string node_id = hs_->machine.peer_node_id();
  if (phase_ != Phase::deciding) {  // stray-closed or shut down while deciding
    if (decision.kind == JoinDecision::Kind::accept) server_.membership.session_ended(node_id);
    return;
  }
  switch (decision.kind) {
    case JoinDecision::Kind::reject:
      rejected(decision.reason, decision.detail);
      return;
    case JoinDecision::Kind::redirect:
      send(hs_->machine.redirect(std::move(decision.redirect)));
      log_info("mesh: redirected join of " + node_id + " from " + remote_addr() + " to the leader");
      close_after_reply(Outcome::normal);
      return;
    case JoinDecision::Kind::accept:
      break;
  }
  if (server_.joined_by_id.count(node_id) != 0) {  // raced with another session of the same id
    server_.membership.session_ended(node_id);
    rejected("duplicate_id", "node id " + node_id + " already has a joined session");
    return;
  }
  // Bookkeeping first: whoever reads `accepted` may look at the metrics next.
  const mesh::Message reply = hs_->machine.accept(std::move(decision.accepted));
  phase_ = Phase::joined;
  leave_pending();
  registered_joined_ = true;
  server_.joined_gauge.add(1);
  server_.joined_by_id[node_id] = this;
  send(reply);
  server_.enter(server_.joined, *this);
  if (!server_.heartbeat_running) server_.send_heartbeats();
  log_info("mesh: node " + node_id + " joined from " + remote_addr() + " (raft " + hs_->machine.join().raft_addr +
           ", after " + std::to_string(static_cast<int64_t>(seconds_since(accepted_at_) * 1000)) + " ms)");
}

void MeshConnection::on_grace_expired() {
  if (stray_reported_ || phase_ >= Phase::joined) return;
  stray_reported_ = true;
  const auto& stray = server_.settings.mesh.stray;
  const std::string_view step = pending_step();
  server_.stray_counter(step).inc();

  // Endpoints, not strings: nothing the mesh thread allocates per stray is
  // freed by the reporter, whose frees would take the mesh thread's
  // allocator arena lock from a thread of lower priority.
  StrayReport report{peer_, local_endpoint(), connected_at(), step, std::nullopt, {}, bytes_in_};
  if (hs_) {
    report.protocol_version =
        hs_->machine.protocol_version() ? hs_->machine.protocol_version() : hs_->parser.peer_version();
    report.node_id = hs_->machine.peer_node_id();
  }
  server_.strays_to_report.push_back(std::move(report));  // handed over once per expiry turn
  if (stray.action == StrayAction::disconnect) {
    finish(Outcome::abnormal);
    close_socket();
  }
}

void MeshConnection::on_idle_timeout() {
  if (phase_ != Phase::joined) return;
  log_warn("mesh: member " + hs_->machine.peer_node_id() + " at " + remote_addr() + " silent for " +
           format_duration(std::chrono::duration_cast<Duration>(server_.settings.session_timeout)) +
           "; closing its session");
  finish(Outcome::normal);
  close_socket();
}

void MeshConnection::send_heartbeat() {
  if (phase_ != Phase::joined) return;
  send(mesh::Heartbeat{0, ++active().heartbeat_sequence});
}

void MeshConnection::abort_for_shutdown() {
  finish(phase_ == Phase::joined ? Outcome::normal : Outcome::abnormal);
  close_socket();
}

void MeshConnection::protocol_error(const mesh::FrameError& error, const std::optional<mesh::Message>& reply,
                                    std::string_view step) {
  const std::string_view reason = mesh::to_string(error.error);
  server_.protocol_errors_total.with({std::string(reason)}).inc();
  EventFields fields;
  fields.add("remoteAddr", remote_addr())
      .add("localAddr", local_addr())
      .add("reason", reason)
      .add("offset", error.offset)
      .add("detail", error.detail)
      .add("pendingStep", step);
  if (!hs_->machine.peer_node_id().empty()) fields.add("nodeId", hs_->machine.peer_node_id());
  fields.add("bytesIn", bytes_in_);
  server_.bus.emit("connection", "protocol_error", fields);
  log_info("mesh: protocol error from " + remote_addr() + ": " + std::string(reason) + " at offset " +
           std::to_string(error.offset) + ": " + error.detail);
  // Error replies carry version 1: their layouts never change, so any
  // client can read them whatever it negotiated.
  if (reply) send(*reply, mesh::kLowestVersion);
  close_after_reply(phase_ == Phase::joined ? Outcome::normal : Outcome::abnormal);
}

void MeshConnection::rejected(std::string_view reason, std::string_view detail) {
  const bool before_tls = phase_ == Phase::tls_handshake;
  server_.rejections_total.with({std::string(reason)}).inc();
  EventFields fields;
  fields.add("remoteAddr", remote_addr()).add("localAddr", local_addr());
  if (hs_ && !hs_->machine.peer_node_id().empty()) {
    fields.add("nodeId", hs_->machine.peer_node_id());
  } else {
    fields.add_null("nodeId");
  }
  fields.add("reason", reason).add("detail", detail);
  server_.bus.emit("connection", "rejected", fields);
  log_warn("mesh: rejected " + remote_addr() +
           (hs_ && !hs_->machine.peer_node_id().empty() ? " (node " + hs_->machine.peer_node_id() + ")" : "") + ": " +
           std::string(reason) + (detail.empty() ? "" : ": " + std::string(detail)));
  if (before_tls) {  // nothing can be sent without a TLS session
    finish(Outcome::abnormal);
    close_socket();
    return;
  }
  {
    // The machine already built the Rejected for its own refusals; build it
    // here for the server's (token, duplicate, membership, TLS).
    if (hs_ && hs_->machine.state() != mesh::HandshakeMachine::State::closed) {
      send(hs_->machine.reject(std::string(reason), std::string(detail)));
    } else {
      send(mesh::Rejected{std::string(reason), std::string(detail)});
    }
  }
  close_after_reply(Outcome::abnormal);
}

void MeshConnection::send(const mesh::Message& message, std::optional<uint8_t> version) {
  std::string& out = active().out;
  out += mesh::encode(message, version.value_or(frame_version()));
  if (out.size() > kMaxQueuedOutputBytes) {
    log_warn("mesh: " + remote_addr() + " is not reading its frames; closing the session");
    finish(phase_ == Phase::joined ? Outcome::normal : Outcome::abnormal);
    close_socket();
    return;
  }
  if (!writing_) flush();
}

void MeshConnection::flush() {
  if (!hs_ || hs_->out.empty() || phase_ == Phase::closed) return;
  writing_ = true;
  hs_->writing.clear();
  hs_->writing.swap(hs_->out);
  auto done = [self = self()](const boost::system::error_code& ec, size_t) {
    self->writing_ = false;
    if (self->phase_ == Phase::closed) return;
    if (ec) {
      self->finish(self->phase_ == Phase::joined ? Outcome::normal : Outcome::abnormal);
      self->close_socket();
      return;
    }
    if (!self->hs_->out.empty()) {
      self->flush();
    } else if (self->phase_ == Phase::closing) {
      self->close_after_reply(self->outcome_);
    }
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(hs_->writing), std::move(done));
  } else {
    asio::async_write(socket_, asio::buffer(hs_->writing), std::move(done));
  }
}

void MeshConnection::close_after_reply(Outcome outcome) {
  if (phase_ == Phase::closed) return;
  outcome_ = outcome;
  finish(outcome);
  phase_ = Phase::closing;
  if (writing_) return;  // flush() comes back here
  // Half-close so the peer reads the reply and an EOF; keep draining what it
  // still sends (bounded by the linger queue), so closing never turns into a
  // reset that would discard the reply on the peer's side.
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_send, ignored);
  if (queue == &server_.closing.queue) return;
  server_.enter(server_.closing, *this);
  read_more();  // to EOF, discarding
}

void MeshConnection::leave_pending() {
  if (!counted_pending_) return;
  counted_pending_ = false;
  --server_.pending_count;
  auto it = server_.pending_per_source.find(source());
  if (it != server_.pending_per_source.end() && --it->second == 0) server_.pending_per_source.erase(it);
  server_.pending_gauge.add(-1);
}

// Accounting, exactly once per connection: gauges, duration, registries.
void MeshConnection::finish(Outcome outcome) {
  if (finished_) return;
  finished_ = true;
  leave_pending();
  if (registered_joined_) {
    registered_joined_ = false;
    const std::string& id = hs_->machine.peer_node_id();
    server_.joined_by_id.erase(id);
    server_.joined_gauge.add(-1);
    server_.membership.session_ended(id);
  }
  server_.pending.queue.remove(*this);
  server_.joined.queue.remove(*this);
  (outcome == Outcome::normal ? server_.duration_normal : server_.duration_abnormal).observe(seconds_since(accepted_at_));
}

// A quiet connection is deleted here (the quiet set held the last
// reference): every caller returns right after.
void MeshConnection::close_socket() {
  finish(Outcome::abnormal);  // no-op when already accounted
  phase_ = Phase::closed;
  server_.pending.queue.remove(*this);
  server_.joined.queue.remove(*this);
  server_.closing.queue.remove(*this);
  if (server_.connections == this || prev_connection != nullptr) {  // still linked
    if (prev_connection != nullptr) {
      prev_connection->next_connection = next_connection;
    } else {
      server_.connections = next_connection;
    }
    if (next_connection != nullptr) next_connection->prev_connection = prev_connection;
    prev_connection = next_connection = nullptr;
  }
  if (quiet_fd_ >= 0) {
    server_.quiet_by_fd[static_cast<size_t>(quiet_fd_)] = nullptr;
    ::close(std::exchange(quiet_fd_, -1));  // also leaves the quiet set: the descriptor was never duplicated
    intrusive_ptr_release(this);
    return;
  }
  boost::system::error_code ignored;
  socket_.close(ignored);
}

MeshConnection::Handshake& MeshConnection::active() {
  if (!hs_) {
    hs_ = std::make_unique<Handshake>(server_);
    // Only a connection that talks gets small frames worth sending at once.
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
  }
  return *hs_;
}

std::chrono::system_clock::time_point MeshConnection::connected_at() const {
  // Derived rather than stored: one clock reading fewer per accept and
  // eight bytes fewer per idle connection. The steady clock is read first,
  // so a preemption between the two readings can only make the result
  // later, never earlier than the connection.
  const auto elapsed = SteadyClock::now() - accepted_at_;
  return std::chrono::system_clock::now() - std::chrono::duration_cast<std::chrono::system_clock::duration>(elapsed);
}

tcp::endpoint MeshConnection::local_endpoint() {
  if (server_.local_address_is_fixed) return server_.listen_endpoint;
  tcp::endpoint local;
  auto length = static_cast<socklen_t>(local.capacity());
  const int fd = quiet_fd_ >= 0 ? quiet_fd_ : socket_.native_handle();
  if (::getsockname(fd, local.data(), &length) != 0) return server_.listen_endpoint;
  local.resize(length);
  return local;
}

std::string_view MeshConnection::pending_step() const {
  if (phase_ == Phase::tls_handshake) return "tls_handshake";
  if (!hs_) return "hello";
  const auto step = hs_->machine.pending_step();
  return step.empty() ? std::string_view("joined") : step;
}

uint8_t MeshConnection::frame_version() const {
  if (hs_ && hs_->machine.protocol_version()) return *hs_->machine.protocol_version();
  return mesh::kLowestVersion;
}

// ---- MeshServer --------------------------------------------------------------

MeshServer::MeshServer(MeshServerSettings settings, EventBus& bus, MetricsRegistry& metrics,
                       MembershipAuthority& membership)
    : impl_(std::make_unique<Impl>(std::move(settings), bus, metrics, membership)) {}

MeshServer::~MeshServer() { stop(); }

void MeshServer::listen() {
  Impl& s = *impl_;
  const auto& tls = s.settings.mesh.tls;
  if (tls.enabled()) s.tls.emplace(make_server_tls_context(tls, "mesh.tls"));
  const auto endpoint = resolve_listen_address(s.settings.mesh.listen);
  boost::system::error_code ec;
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) s.acceptor.non_blocking(true, ec);
  if (ec) throw std::runtime_error("cannot listen on mesh address " + s.settings.mesh.listen + ": " + ec.message());
  const int quiet = ::epoll_create1(EPOLL_CLOEXEC);
  if (quiet < 0) throw std::runtime_error(std::string("mesh: cannot create an epoll set: ") + std::strerror(errno));
  s.quiet_watch.assign(quiet);
  s.listen_endpoint = s.acceptor.local_endpoint();
  s.local_address_is_fixed = !endpoint.address().is_unspecified();
}

std::string MeshServer::local_address() const { return format_endpoint(impl_->listen_endpoint); }

void MeshServer::start() {
  Impl& s = *impl_;
  s.stray_reporter.start();
  s.watch_quiet();
  s.accept_loop();
  s.thread = std::thread([&s] {
    for (;;) {
      try {
        s.io.run();
        return;
      } catch (const std::exception& e) {
        // One connection's bug must not take the mesh port down.
        log_error(std::string("mesh: unexpected error, continuing: ") + e.what());
      }
    }
  });
}

void MeshServer::stop() {
  Impl& s = *impl_;
  if (!s.thread.joinable()) return;
  asio::post(s.io, [&s] { s.stop_on_io_thread(); });
  s.thread.join();
  s.stray_reporter.stop();
}

}  // namespace zctl
