#include "mesh_dialer.hpp"

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <array>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

#include "mesh_protocol.hpp"
#include "net_address.hpp"
#include "peer_sessions.hpp"
#include "tls_context.hpp"
#include "zctl/core/log.hpp"

namespace zctl {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// How one conversation with a peer ended.
struct SessionEnd {
  enum class Kind { closed, redirect, rejected, failed };
  Kind kind = Kind::failed;
  bool was_joined = false;
  std::string peer_id;
  std::string detail;  // failed/closed: why; rejected: the node's detail
  std::string reason;  // rejected
  std::string leader_mesh_addr;  // redirect
};

std::string dash_if_empty(const std::string& s) { return s.empty() ? "-" : s; }

}  // namespace

// One TCP (or TLS) connection. Its deadline timer closes the socket, which
// fails whatever read or write is pending: one mechanism for connect,
// handshake and idle timeouts.
struct DialedConnection {
  DialedConnection(asio::io_context& io, ssl::context* tls) : socket(io), deadline(io) {
    if (tls != nullptr) stream.emplace(socket, *tls);
  }
  void arm(Duration after) {
    deadline.expires_after(after);
    deadline.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) close();
    });
  }
  void close() {
    boost::system::error_code ignored;
    socket.close(ignored);
  }
  asio::awaitable<size_t> read_some(asio::mutable_buffer buffer) {
    if (stream) co_return co_await stream->async_read_some(buffer, asio::use_awaitable);
    co_return co_await socket.async_read_some(buffer, asio::use_awaitable);
  }
  asio::awaitable<void> write(const std::string& bytes) {
    if (stream) {
      co_await asio::async_write(*stream, asio::buffer(bytes), asio::use_awaitable);
    } else {
      co_await asio::async_write(socket, asio::buffer(bytes), asio::use_awaitable);
    }
  }

  tcp::socket socket;
  std::optional<ssl::stream<tcp::socket&>> stream;
  asio::steady_timer deadline;
};

struct MeshDialer::Impl : std::enable_shared_from_this<MeshDialer::Impl> {
  Impl(MeshDialerSettings s, PeerSessions& p) : settings(std::move(s)), peers(p), guard(io.get_executor()) {}

  struct Target {
    std::string id;
    std::string addr;
    bool wanted = true;
    std::optional<asio::steady_timer> wake;
  };

  asio::awaitable<SessionEnd> converse(std::string address, std::string expected_id);
  asio::awaitable<void> keep(std::shared_ptr<Target> target);
  asio::awaitable<void> join_loop(std::vector<std::string> seeds);
  asio::awaitable<void> sleep(asio::steady_timer& timer, Duration d);

  MeshDialerSettings settings;
  PeerSessions& peers;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  std::optional<ssl::context> tls;
  std::thread thread;

  // io thread only
  bool stopped = false;
  std::map<std::string, std::shared_ptr<Target>> targets;
  std::set<DialedConnection*> live;
  std::set<asio::steady_timer*> sleepers;
};

asio::awaitable<void> MeshDialer::Impl::sleep(asio::steady_timer& timer, Duration d) {
  timer.expires_after(d);
  sleepers.insert(&timer);
  try {
    co_await timer.async_wait(asio::use_awaitable);
  } catch (const boost::system::system_error&) {
    // cancelled: woken early (stop, or the target changed)
  }
  sleepers.erase(&timer);
}

// GCC 12 miscompiles co_await inside conditions and nested declarations,
// so every co_await here is a plain statement and the protocol decisions
// are ClientHandshake's.
asio::awaitable<SessionEnd> MeshDialer::Impl::converse(std::string address, std::string expected_id) {
  SessionEnd end;
  DialedConnection c(io, tls ? &*tls : nullptr);
  live.insert(&c);
  mesh::ClientHandshake handshake(settings.node_id, settings.cluster_id,
                                  mesh::Join{settings.raft_addr, settings.join_token, dash_if_empty(settings.mesh_addr),
                                             dash_if_empty(settings.admin_addr)},
                                  expected_id);
  try {
    const tcp::endpoint endpoint = resolve_listen_address(address);
    c.arm(settings.connect_timeout);
    co_await c.socket.async_connect(endpoint, asio::use_awaitable);
    c.socket.set_option(tcp::no_delay(true));
    c.arm(settings.handshake_timeout);
    if (c.stream) co_await c.stream->async_handshake(ssl::stream_base::client, asio::use_awaitable);
    std::string out = handshake.hello_frame();
    co_await c.write(out);
    mesh::FrameParser parser(settings.max_frame_bytes);
    std::array<char, 16384> buffer;
    bool done = false;
    while (!done) {
      const size_t n = co_await c.read_some(asio::buffer(buffer));
      std::string_view in(buffer.data(), n);
      out.clear();
      while (!in.empty() && !done) {
        const mesh::ParseResult parsed = parser.feed(in);
        in.remove_prefix(parsed.consumed);
        if (parsed.failed()) {
          end.detail = "protocol error from the node: " + std::string(mesh::to_string(parsed.error.error)) +
                       " at offset " + std::to_string(parsed.error.offset) + ": " + parsed.error.detail;
          done = true;
          break;
        }
        if (!parsed.has_frame()) break;
        mesh::ClientStep step = handshake.on_message(parsed.frame.message);
        switch (step.kind) {
          case mesh::ClientStep::Kind::send:
            out += step.reply;
            break;
          case mesh::ClientStep::Kind::joined:
            end.was_joined = true;
            end.peer_id = handshake.peer_id();
            peers.opened(end.peer_id, address, handshake.version());
            c.arm(settings.session_timeout);
            break;
          case mesh::ClientStep::Kind::alive:
            break;
          case mesh::ClientStep::Kind::redirect:
            end.kind = SessionEnd::Kind::redirect;
            end.leader_mesh_addr = step.redirect.leader_mesh_addr;
            end.detail = step.detail;
            done = true;
            break;
          case mesh::ClientStep::Kind::rejected:
            end.kind = SessionEnd::Kind::rejected;
            end.reason = step.rejected.reason;
            end.detail = step.rejected.detail;
            done = true;
            break;
          case mesh::ClientStep::Kind::failed:
            end.detail = step.detail;
            done = true;
            break;
        }
      }
      if (end.was_joined && n > 0) c.arm(settings.session_timeout);  // any frame proves the peer alive
      if (!done && !out.empty()) co_await c.write(out);
    }
  } catch (const std::exception& e) {
    if (end.detail.empty()) end.detail = c.socket.is_open() ? e.what() : std::string("closed: ") + e.what();
  }
  c.deadline.cancel();
  c.close();
  live.erase(&c);
  if (end.was_joined) {
    end.kind = SessionEnd::Kind::closed;
    peers.closed(end.peer_id);
  }
  co_return end;
}

asio::awaitable<void> MeshDialer::Impl::keep(std::shared_ptr<Target> target) {
  target->wake.emplace(io);
  Duration backoff = settings.retry_initial;
  std::string last_problem;
  while (!stopped && target->wanted) {
    if (peers.is_up(target->id)) {  // it dialled us: nothing to do while that lasts
      co_await sleep(*target->wake, settings.session_timeout / 2);
      continue;
    }
    const SessionEnd end = co_await converse(target->addr, target->id);
    if (stopped || !target->wanted) break;
    if (end.was_joined) {
      log_info("mesh: session with " + target->id + " ended: " + end.detail + "; reconnecting");
      backoff = settings.retry_initial;
      last_problem.clear();
    } else {
      const std::string problem = end.kind == SessionEnd::Kind::rejected ? end.reason + ": " + end.detail : end.detail;
      if (problem != last_problem) {
        log_warn("mesh: cannot open a session with member " + target->id + " at " + target->addr + ": " + problem);
        last_problem = problem;
      }
      // Members retry at least twice per session timeout: a follower cannot
      // validate its leader without this session, so after a partition heals
      // the session must be back within about one election timeout.
      backoff = std::min<Duration>({backoff * 2, settings.retry_max, settings.session_timeout / 2});
    }
    co_await sleep(*target->wake, backoff);
  }
}

asio::awaitable<void> MeshDialer::Impl::join_loop(std::vector<std::string> seeds) {
  asio::steady_timer wake(io);
  Duration backoff = settings.retry_initial;
  size_t seed = 0;
  std::string address = seeds.front();
  int redirects = 0;
  while (!stopped) {
    const SessionEnd end = co_await converse(address, "");
    if (stopped) break;
    if (end.was_joined) {
      log_info("mesh: joined through " + address + "; session with " + end.peer_id + " ended: " + end.detail);
      break;  // a member now: the member sessions take over
    }
    if (end.kind == SessionEnd::Kind::redirect && ++redirects <= 3) {
      log_info("mesh: " + address + " redirected the join to " + end.detail);
      address = end.leader_mesh_addr;
      continue;
    }
    redirects = 0;
    if (end.kind == SessionEnd::Kind::rejected) {
      const bool final_answer = end.reason != "no_leader" && end.reason != "shutting_down" && end.reason != "join_failed";
      (final_answer ? log_error : log_warn)("mesh: join refused by " + address + ": " + end.reason + ": " + end.detail +
                                            (final_answer ? " (retrying every " +
                                                                std::to_string(std::chrono::duration_cast<std::chrono::seconds>(settings.retry_max).count()) + " s)"
                                                          : ""));
      backoff = final_answer ? settings.retry_max : std::min<Duration>(backoff * 2, settings.retry_max);
    } else {
      log_warn("mesh: cannot join through " + address + ": " + end.detail);
      backoff = std::min<Duration>(backoff * 2, settings.retry_max);
    }
    seed = (seed + 1) % seeds.size();
    address = seeds[seed];
    co_await sleep(wake, backoff);
  }
}

MeshDialer::MeshDialer(MeshDialerSettings settings, PeerSessions& peers)
    : impl_(std::make_shared<Impl>(std::move(settings), peers)) {}

MeshDialer::~MeshDialer() { stop(); }

void MeshDialer::start() {
  const TlsConfig& t = impl_->settings.tls;
  if (t.enabled()) {
    impl_->tls.emplace(make_client_tls_context({t.ca_file, t.cert_file, t.key_file}, ServerCheck::ca_file_if_given,
                                               "mesh.tls (client side)"));
  }
  impl_->thread = std::thread([impl = impl_] { impl->io.run(); });
}

void MeshDialer::stop() {
  Impl& i = *impl_;
  if (!i.thread.joinable()) return;
  asio::post(i.io, [&i] {
    i.stopped = true;
    for (auto* c : i.live) c->close();
    for (auto* timer : i.sleepers) timer->cancel();
    i.guard.reset();
  });
  i.thread.join();
}

void MeshDialer::join_through(std::vector<std::string> seeds) {
  if (seeds.empty()) return;
  auto impl = impl_;
  asio::post(impl->io, [impl, seeds = std::move(seeds)]() mutable {
    if (impl->stopped) return;
    asio::co_spawn(impl->io, impl->join_loop(std::move(seeds)), asio::detached);
  });
}

void MeshDialer::set_targets(std::map<std::string, std::string> wanted) {
  auto impl = impl_;
  asio::post(impl->io, [impl, wanted = std::move(wanted)] {
    if (impl->stopped) return;
    for (auto it = impl->targets.begin(); it != impl->targets.end();) {
      const auto found = wanted.find(it->first);
      if (found == wanted.end() || found->second != it->second->addr) {
        it->second->wanted = false;
        if (it->second->wake) it->second->wake->cancel();
        it = impl->targets.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [id, addr] : wanted) {
      if (impl->targets.count(id) != 0) continue;
      auto target = std::make_shared<Impl::Target>();
      target->id = id;
      target->addr = addr;
      impl->targets[id] = target;
      asio::co_spawn(impl->io, impl->keep(target), asio::detached);
    }
  });
}

}  // namespace zctl
