// The debounce half of cluster/state.has_leader and state.is_leaderless
// (SPEC §5): which validated-leader state to announce, and when.
//
// The cluster engine decides *whether* a leader is validated (a leader
// commits an entry of its own term and keeps a majority of voters in contact
// within the election timeout; a follower has applied that leader's entry
// for the current term and heard from it within the election timeout) and
// feeds the result here on
// every observation. This class turns that stream into exactly one
// announcement per lasting transition:
//  - a state must hold for `stability` before it is announced;
//  - a state that reverts (or changes again) within the window is a flap:
//    counted, never announced;
//  - the first announcement after start is the first state that holds, so a
//    node never emits a leaderless/has_leader pair while it boots;
//  - a re-election of the same leader in a new term is not a transition;
//  - a leader that is the only voter is announced without the window (it
//    cannot flap), so a single-node cluster is ready as soon as it is.
//
// Pure: no clock, no timer, no threads; the caller passes `now` and arms a
// timer at next_check(). Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace zctl {

struct LeaderObservation {
  uint64_t term = 0;
  std::optional<std::string> validated_leader;  // nullopt: no validated leader
  // The validated leader is this node and the only voter. Its leadership
  // then ends only when it stops or commits a configuration change itself:
  // there is no flap to wait out, so the state is announced at once.
  bool sole_voter = false;
};

struct LeaderAnnouncement {
  enum class Kind { has_leader, is_leaderless };
  Kind kind = Kind::is_leaderless;
  std::string leader_id;       // has_leader
  std::optional<std::string> last_leader_id;  // is_leaderless: the last announced leader, if any
  uint64_t term = 0;
};

class LeaderStateTracker {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LeaderStateTracker(Clock::duration stability) : stability_(stability) {}

  // Records what is true at `now`; returns the announcement due, if any.
  std::optional<LeaderAnnouncement> observe(Clock::time_point now, const LeaderObservation& observation);

  // When observe() must be called again for a pending state to be
  // announced on time, even if nothing changes; nullopt when nothing is
  // pending.
  std::optional<Clock::time_point> next_check() const;

  bool announced() const { return announced_.has_value(); }
  // The announced leader; nullopt when leaderless or nothing announced yet.
  std::optional<std::string> announced_leader() const;
  uint64_t flaps_suppressed() const { return flaps_suppressed_; }
  uint64_t leader_changes() const { return leader_changes_; }  // announcements of a different leader

 private:
  using State = std::optional<std::string>;  // the validated leader, or none

  std::optional<LeaderAnnouncement> announce(const LeaderObservation& observation);

  Clock::duration stability_;
  std::optional<State> announced_;  // nullopt until the first announcement
  std::optional<State> candidate_;  // a state differing from announced_, not yet held long enough
  Clock::time_point candidate_since_{};
  std::optional<std::string> last_leader_;
  uint64_t flaps_suppressed_ = 0;
  uint64_t leader_changes_ = 0;
};

}  // namespace zctl
