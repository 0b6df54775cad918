// Leader validation (SPEC §5) on one raft node, the part of the cluster
// adapter that talks to libraft directly; the debounce is LeaderStateTracker's.
//
// A leader validates itself by committing an announce entry of its own
// term (libraft 0.15 commits no no-op on election and may count replicas of
// older entries as committed, so nothing is trusted before that), then
// counts as leader only while a majority of voters (itself included) has
// answered its AppendEntries of the current term within one election
// timeout. Contact, not a commit per heartbeat: a commit waits for disk
// writes on the leader and a follower, and a disk stalled for longer than
// the election timeout (seen on loaded machines) would otherwise make a
// leader that every follower still follows announce itself leaderless. A
// follower validates a leader once it has applied that leader's announce
// for the current term, heard from it within the election timeout, and has
// an authenticated mesh session with it.
//
// raft 0.15 reports no per-peer contact times (only a flag reset every
// election timeout), so watch_contacts() hooks the raft_io's receive
// callback: every AppendEntries result is timestamped, then handed to raft
// unchanged.
//
// Works on any struct raft: the libuv-backed node in ClusterEngine and the
// in-memory <raft/fixture.h> cluster in the tests.
//
// Threads: the raft loop thread only. Lifecycle: owned next to its raft and
// ClusterState; watch_contacts() after raft_init and before raft_start; it
// must stay alive until idle() once raft_close() is near, and until raft is
// closed.
#pragma once

extern "C" {
#include <raft.h>
}

#include <functional>
#include <string>
#include <unordered_map>

#include "cluster_state.hpp"
#include "leader_state.hpp"

namespace zctl {

class LeaderValidator {
 public:
  // Is a mesh session with this node id up and authenticated?
  using SessionCheck = std::function<bool(const std::string& node_id)>;

  LeaderValidator(std::string node_id, raft_id self_id, raft_time election_timeout, const ClusterState& state,
                  SessionCheck session_up);
  LeaderValidator(const LeaderValidator&) = delete;
  LeaderValidator& operator=(const LeaderValidator&) = delete;
  ~LeaderValidator();

  // Timestamps the AppendEntries results `io` receives from now on (see
  // above). Call once, after raft_init() and before raft_start().
  void watch_contacts(raft_io* io);

  // Every heartbeat, and as soon as the announce commits: as leader,
  // submits the announce of a new term, then one barrier that tells the
  // followers at once that the announce is committed.
  void tick(raft* r);

  // What is validated at `now`.
  LeaderObservation observe(raft* r, raft_time now) const;

  // No announce or barrier of ours in flight (raft 0.15 can crash when it is
  // closed while one is still being written).
  bool idle() const { return !announce_in_flight_ && !barrier_in_flight_; }

  // Changes when this node's own validation moves on within a term (its
  // announce committed).
  uint64_t progress() const { return announce_committed_term_; }

  // Called by the receive hook: `from` answered an AppendEntries of `term`.
  void heard(raft_id from, uint64_t term, raft_time at) { contacts_[from] = Contact{term, at}; }

 private:
  struct Contact {
    uint64_t term = 0;
    raft_time at = 0;
  };

  // A majority of voters, this node included, answered within the election
  // timeout in the current term.
  bool quorum_in_contact(const raft* r, raft_time now) const;

  const std::string node_id_;
  const raft_id self_id_;
  const raft_time election_timeout_;
  const ClusterState& state_;
  SessionCheck session_up_;
  raft_io* watched_io_ = nullptr;
  std::unordered_map<raft_id, Contact> contacts_;

  struct raft_apply announce_request_{};
  bool announce_in_flight_ = false;
  uint64_t announce_term_ = 0;            // the term of the announce in flight
  uint64_t announce_committed_term_ = 0;  // as leader: our announce of this term is committed
  struct raft_barrier barrier_request_{};
  bool barrier_in_flight_ = false;
  uint64_t commit_published_term_ = 0;  // the term whose announce commit a barrier carried out
};

// A node that starts has not heard from a leader yet: raft draws its first
// election timer from [timeout, 2 x timeout), then a vote round and the
// announce commit follow. Until that window has passed, no validated leader
// means "not known yet", not "leaderless", so a start-up never announces a
// leaderless/has_leader pair. True when `observation` must not be fed to the
// tracker yet.
inline bool leader_unknown_at_startup(bool announced_before, const LeaderObservation& observation,
                                      raft_time since_start, raft_time election_timeout, raft_time heartbeat) {
  return !announced_before && !observation.validated_leader && since_start < 2 * election_timeout + 2 * heartbeat;
}

// The FSM's snapshot and restore for a ClusterState, in raft's buffer
// ownership rules (snapshot buffers are raft_malloc'd and handed to raft;
// restore owns and frees buf->base). Shared by ClusterEngine and the
// fixture tests.
int snapshot_cluster_state(const ClusterState& state, raft_buffer* bufs[], unsigned* n_bufs);
void restore_cluster_state(ClusterState& state, raft_buffer* buf);

// raft_digest() is raft's own stable hash: a node id maps to the same raft
// id on every node and across restarts.
raft_id raft_id_of(const std::string& node_id);

// Voters in the latest (possibly uncommitted) configuration.
unsigned voter_count(const raft_configuration& configuration);

}  // namespace zctl
