#include "leader_state.hpp"

namespace zctl {

std::optional<LeaderAnnouncement> LeaderStateTracker::observe(Clock::time_point now,
                                                              const LeaderObservation& observation) {
  const State& seen = observation.validated_leader;
  if (announced_ && *announced_ == seen) {
    // Back to the announced state before the candidate held: a flap.
    if (candidate_) {
      ++flaps_suppressed_;
      candidate_.reset();
    }
    return std::nullopt;
  }
  if (!candidate_ || *candidate_ != seen) {
    // A candidate replaced by another before it held is a flap as well
    // (leader A -> none -> B within the window announces only B).
    if (candidate_ && announced_) ++flaps_suppressed_;
    candidate_ = seen;
    candidate_since_ = now;
  }
  if (now - candidate_since_ < stability_ && !(seen && observation.sole_voter)) return std::nullopt;
  return announce(observation);
}

std::optional<LeaderAnnouncement> LeaderStateTracker::announce(const LeaderObservation& observation) {
  LeaderAnnouncement a;
  a.term = observation.term;
  if (observation.validated_leader) {
    a.kind = LeaderAnnouncement::Kind::has_leader;
    a.leader_id = *observation.validated_leader;
    if (last_leader_ != a.leader_id) ++leader_changes_;
    last_leader_ = a.leader_id;
  } else {
    a.kind = LeaderAnnouncement::Kind::is_leaderless;
    a.last_leader_id = last_leader_;
  }
  announced_ = observation.validated_leader;
  candidate_.reset();
  return a;
}

std::optional<LeaderStateTracker::Clock::time_point> LeaderStateTracker::next_check() const {
  if (!candidate_) return std::nullopt;
  return candidate_since_ + stability_;
}

std::optional<std::string> LeaderStateTracker::announced_leader() const {
  if (!announced_) return std::nullopt;
  return *announced_;
}

}  // namespace zctl
