// The cluster engine: the one adapter around Debian's libraft 0.15 (+ libuv).
// Nothing outside cluster_engine.cpp, leader_validator.* and raft_transport.*
// includes raft.h.
//
// It runs a Raft node on its own thread and libuv loop, validates the
// leader (LeaderValidator), debounces the result (LeaderStateTracker) and
// emits cluster/state.has_leader, state.is_leaderless, leadership.gained,
// leadership.lost and members.changed. It also changes the membership:
// joins arriving through the mesh (as leader: add the node as a spare, let
// raft catch it up and promote it to voter, then accept; as follower:
// redirect to the leader), pre-authorisations, removals and leadership
// transfers. On stop, a leader hands leadership over first.
//
// First start: `bootstrap` makes a single-voter cluster; otherwise the node
// waits for a leader to add it. Restarts reuse <data_dir> either way.
//
// Threads: start() and stop() from the owner's thread; status(), view()
// and the membership calls from any thread (they queue work for the loop
// thread through uv_async_send). Every callback runs on the loop thread:
// copy what you need and post it to your own thread.
//
// Lifecycle: construct -> start() (initialises raft on the loop thread and
// waits for the result; throws std::runtime_error) -> stop() (transfers
// leadership when leading, closes raft, joins the thread; idempotent, also
// run by the destructor). Requests still queued at stop are answered with
// a failure.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "membership.hpp"
#include "zctl/core/config.hpp"

namespace zctl {

class EventBus;
class MetricsRegistry;

struct ClusterSettings {
  std::string node_id;
  std::string raft_address;  // IPv4 HOST:PORT the Raft transport listens on and advertises
  std::string mesh_address;  // advertised in this node's member record ("" unknown)
  std::string admin_address;
  std::string data_dir;      // raft's own directory
  bool bootstrap = true;     // first start: a new single-node cluster; false: wait to be added
  std::vector<std::string> allowed_nodes;  // cluster.allowed_nodes; empty: any node with the token
  Duration election_timeout{std::chrono::seconds(1)};
  Duration heartbeat{std::chrono::milliseconds(100)};
  Duration leader_stability{std::chrono::milliseconds(300)};
  // Is an authenticated mesh session with this node id up? (any thread)
  std::function<bool(const std::string& node_id)> session_up;
};

// What /readyz, /metrics and the CLI read; a consistent snapshot.
struct ClusterStatus {
  bool state_known = false;  // the first has_leader / is_leaderless was announced
  bool has_leader = false;   // a validated leader is announced
  bool is_leader = false;    // and it is this node
  std::string leader_id;
  uint64_t term = 0;
  uint64_t commit_index = 0;
  uint64_t members = 0;
};

struct ClusterMemberView {
  std::string id;
  std::string raft_addr;
  std::string mesh_addr;   // "" when unknown
  std::string admin_addr;  // "" when unknown
  std::string role;        // voter | standby | spare
  bool leader = false;     // the announced leader (set in view(); not in MembersListener calls)
  bool operator==(const ClusterMemberView&) const = default;
};

struct ClusterView {
  ClusterStatus status;
  std::string node_id;
  std::string state;  // leader | follower | candidate | unavailable | removed
  double last_contact_seconds = 0;  // since the leader was last heard from (0 on the leader)
  uint64_t configuration_index = 0;
  std::vector<ClusterMemberView> members;
  std::vector<std::string> authorized;  // pre-authorised ids that are not members yet
};

// The answer to an admin request.
struct ClusterReply {
  enum class Code { ok, not_leader, no_leader, not_member, invalid, failed };
  Code code = Code::ok;
  std::string detail;
  std::string leader_id;     // not_leader: who leads
  std::string leader_admin;  // not_leader: its admin address, "" when unknown
  std::string value;         // ok: the id the request was about, or the new leader
  uint64_t index = 0;        // ok: the log index of the change, when there is one
};

class ClusterEngine {
 public:
  using AnnouncementListener = std::function<void()>;  // after each announcement, status() reflects it
  using MembersListener = std::function<void(const std::vector<ClusterMemberView>&)>;
  using ReplyCallback = std::function<void(ClusterReply)>;

  ClusterEngine(ClusterSettings settings, EventBus& bus, MetricsRegistry& metrics,
                AnnouncementListener on_announcement = {}, MembersListener on_members = {});
  ~ClusterEngine();
  ClusterEngine(const ClusterEngine&) = delete;
  ClusterEngine& operator=(const ClusterEngine&) = delete;

  // Where this node's mesh port and admin API are reached, once bound;
  // before start().
  void advertise(std::string mesh_address, std::string admin_address);
  void start();
  // Leader-state announcements (and leadership.gained/lost) that came due
  // before this call were held; they are emitted now, in order, and every
  // later one as it comes. The owner calls it after node/started, so a
  // node's events never show cluster state before the node started (a
  // single voter validates itself within milliseconds of start()).
  void open_announcements();
  void stop();
  ClusterStatus status() const;
  ClusterView view() const;

  // A join through the mesh (token and protocol already checked).
  void join(JoinRequest request, MembershipAuthority::DecisionCallback done);
  void authorize(std::string node_id, ReplyCallback done);
  void remove(std::string node_id, ReplyCallback done);
  void transfer_leadership(std::string node_id, ReplyCallback done);  // "" = any voter
  // The last mesh session with this member closed: if it leads, a follower
  // starts an election at once instead of after its election timeout.
  void peer_lost(std::string node_id);

  struct Loop;

 private:
  std::unique_ptr<Loop> loop_;
};

}  // namespace zctl
