// The cluster engine: the one adapter around Debian's libraft 0.15 (+ libuv).
// Nothing else in zctl includes raft.h.
//
// It runs a Raft node on its own thread and libuv loop, validates the
// leader as SPEC §5 defines (a leader commits an announce entry of its own
// term, then a barrier every heartbeat, and counts as leader only while the
// last committed barrier was sent less than one election timeout ago; a
// follower announces a leader once it applied that leader's announce entry
// for the current term and has heard from it within the election timeout),
// feeds the result to a LeaderStateTracker every heartbeat and emits
// cluster/state.has_leader, state.is_leaderless, leadership.gained and
// leadership.lost.
//
// This build bootstraps a single-voter cluster on first start (restarts
// reuse <data_dir>/raft without bootstrapping again); joining other nodes
// through the mesh arrives with the membership work.
//
// Threads: start() and stop() from the owner's thread; status() from any
// thread; everything raft happens on the engine's loop thread, reached only
// through uv_async_send.
//
// Lifecycle: construct -> start() (initialises raft on the loop thread and
// waits for the result; throws std::runtime_error) -> stop() (closes raft,
// joins the thread; idempotent, also run by the destructor).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "zctl/core/config.hpp"

namespace zctl {

class EventBus;
class MetricsRegistry;

struct ClusterSettings {
  std::string node_id;
  std::string raft_address;  // IPv4 HOST:PORT the Raft transport listens on and advertises
  std::string data_dir;      // raft's own directory
  Duration election_timeout{std::chrono::seconds(1)};
  Duration heartbeat{std::chrono::milliseconds(100)};
  Duration leader_stability{std::chrono::milliseconds(300)};
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

class ClusterEngine {
 public:
  // Called on the loop thread after each announcement has been emitted
  // (status() already reflects it).
  using AnnouncementListener = std::function<void()>;

  ClusterEngine(ClusterSettings settings, EventBus& bus, MetricsRegistry& metrics,
                AnnouncementListener on_announcement = {});
  ~ClusterEngine();
  ClusterEngine(const ClusterEngine&) = delete;
  ClusterEngine& operator=(const ClusterEngine&) = delete;

  void start();
  void stop();
  ClusterStatus status() const;

  struct Loop;

 private:
  std::unique_ptr<Loop> loop_;
};

}  // namespace zctl
