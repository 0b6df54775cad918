// The client side of the mesh: this node's outbound sessions.
//
// join_through() joins a cluster through seed addresses (the `--join`
// targets): hello, join with this node's raft, mesh and admin addresses,
// following a redirect to the leader, retrying with backoff while the
// answer is no_leader or the seed is unreachable, and logging a refusal
// (not_member, bad_token, ...) before retrying more slowly. The session
// that is accepted is kept.
//
// set_targets() keeps one session with each member it names (id -> mesh
// address), reconnecting with backoff; a member that already has a session
// with this node (it dialled us) is not dialled again while that lasts.
//
// Every joined session answers heartbeats, closes after session_timeout of
// silence, and is counted in PeerSessions while it is up.
//
// Threads: its own thread and io_context; the public calls may come from
// any thread. Lifecycle: construct -> start() -> ... -> stop() (closes
// every session, joins the thread; idempotent, also run by the destructor).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "zctl/core/config.hpp"

namespace zctl {

class PeerSessions;

struct MeshDialerSettings {
  std::string node_id;
  std::string cluster_id;
  std::string join_token;
  std::string raft_addr;   // advertised in every join
  std::string mesh_addr;   // advertised; "" unknown
  std::string admin_addr;  // advertised; "" unknown
  TlsConfig tls;           // mesh.tls: this node's certificate, and the CA peers must be signed by
  uint32_t max_frame_bytes = 1 << 20;
  Duration connect_timeout{std::chrono::seconds(1)};
  Duration session_timeout{std::chrono::seconds(1)};  // joined: close when silent this long
  Duration handshake_timeout{std::chrono::seconds(30)};
  Duration retry_initial{std::chrono::milliseconds(100)};
  Duration retry_max{std::chrono::seconds(5)};
};

class MeshDialer {
 public:
  MeshDialer(MeshDialerSettings settings, PeerSessions& peers);
  ~MeshDialer();
  MeshDialer(const MeshDialer&) = delete;
  MeshDialer& operator=(const MeshDialer&) = delete;

  // Throws TlsSetupError (tls_context.hpp) when mesh.tls cannot be loaded.
  void start();
  void stop();

  void join_through(std::vector<std::string> seeds);
  void set_targets(std::map<std::string, std::string> targets);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace zctl
