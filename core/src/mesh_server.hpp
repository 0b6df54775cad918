// The mesh port: accepts peer connections, runs the join handshake
// (man/zctl-protocol.7) under the stray grace period, keeps joined sessions
// alive with heartbeats, and reports everything that goes wrong as events
// (connection/stray, rejected, protocol_error, flood) and metrics.
//
// Threads: the server runs on its own thread and io_context, so a flood of
// connections and deadline handling never compete with the admin API;
// events go to the EventBus from that thread, except connection/stray and
// its log line, which a StrayReporter thread (at a lower CPU priority)
// writes so that a burst of expiring connections is closed at the
// deadline. Handing strays over never waits on that thread; the other
// events and log lines of this thread share the EventBus's and the
// logger's locks with it, and may wait on them. Membership decisions may
// complete on any thread; they are posted back.
//
// Lifecycle: construct -> listen() (binds, loads TLS; throws) -> start()
// (starts the thread) -> stop() (closes the listener and every connection,
// joins the thread; idempotent, also run by the destructor).
//
// Memory: a pending connection that has sent nothing is a raw descriptor in
// the server's own epoll set, a few timestamps and a deadline hook -- no
// Asio reactor state, no pending operation, no read buffer (plain TCP reads
// into one buffer shared by the thread) and no parser until its first byte.
// Closing it at its deadline is one close().
#pragma once

#include <memory>
#include <string>

#include "zctl/core/config.hpp"

namespace zctl {

class EventBus;
class MetricsRegistry;
class MembershipAuthority;

struct MeshServerSettings {
  MeshConfig mesh;
  std::string node_id;
  std::string cluster_id;
  std::string join_token;  // empty: joins need no token
  Duration session_timeout{std::chrono::seconds(1)};      // joined: close when silent this long
  Duration heartbeat{std::chrono::milliseconds(100)};     // joined: send a heartbeat this often
  Duration linger{std::chrono::seconds(2)};               // after a refusal: drain the peer this long
};

class MeshServer {
 public:
  MeshServer(MeshServerSettings settings, EventBus& bus, MetricsRegistry& metrics, MembershipAuthority& membership);
  ~MeshServer();
  MeshServer(const MeshServer&) = delete;
  MeshServer& operator=(const MeshServer&) = delete;

  // Binds mesh.listen and loads mesh.tls. Throws TlsSetupError
  // (tls_context.hpp) for the TLS files, std::runtime_error with the
  // address and the reason otherwise.
  void listen();
  std::string local_address() const;  // after listen(): "127.0.0.1:6262"

  void start();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Constant-time comparison of a presented join token with the expected one
// (lengths are hidden too). Exposed for tests.
bool join_token_matches(const std::string& presented, const std::string& expected);

}  // namespace zctl
