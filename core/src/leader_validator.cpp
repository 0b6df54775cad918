#include "leader_validator.hpp"

#include <cstring>
#include <utility>

namespace zctl {

raft_id raft_id_of(const std::string& node_id) {
  const raft_id id = raft_digest(node_id.c_str(), 0);
  return id == 0 ? 1 : id;
}

unsigned voter_count(const raft_configuration& configuration) {
  unsigned voters = 0;
  for (unsigned i = 0; i < configuration.n; ++i) voters += configuration.servers[i].role == RAFT_VOTER;
  return voters;
}

int snapshot_cluster_state(const ClusterState& state, raft_buffer* bufs[], unsigned* n_bufs) {
  const std::string text = state.snapshot();
  *bufs = static_cast<raft_buffer*>(raft_malloc(sizeof(raft_buffer)));
  if (*bufs == nullptr) return RAFT_NOMEM;
  (*bufs)[0].base = raft_malloc(text.size());
  if ((*bufs)[0].base == nullptr) {
    raft_free(*bufs);
    return RAFT_NOMEM;
  }
  std::memcpy((*bufs)[0].base, text.data(), text.size());
  (*bufs)[0].len = text.size();
  *n_bufs = 1;
  return 0;
}

void restore_cluster_state(ClusterState& state, raft_buffer* buf) {
  state.restore(std::string_view(static_cast<const char*>(buf->base), buf->len));
  raft_free(buf->base);
}

LeaderValidator::LeaderValidator(std::string node_id, raft_id self_id, raft_time election_timeout,
                                 const ClusterState& state, SessionCheck session_up)
    : node_id_(std::move(node_id)), self_id_(self_id), election_timeout_(election_timeout), state_(state),
      session_up_(std::move(session_up)) {}

void LeaderValidator::tick(raft* r, raft_time now) {
  if (raft_state(r) != RAFT_LEADER) return;
  const uint64_t term = r->current_term;
  if (announce_committed_term_ != term && !announce_in_flight_) {
    const std::string text = ClusterState::encode_announce({term, self_id_, node_id_});
    raft_buffer buf;
    buf.base = raft_malloc(text.size());
    if (buf.base != nullptr) {
      buf.len = text.size();
      std::memcpy(buf.base, text.data(), text.size());
      announce_request_.data = this;
      announce_term_ = term;
      announce_in_flight_ = true;
      const int rv = raft_apply(r, &announce_request_, &buf, 1, [](struct raft_apply* req, int result, void*) {
        auto& self = *static_cast<LeaderValidator*>(req->data);
        self.announce_in_flight_ = false;
        if (result == 0) self.announce_committed_term_ = self.announce_term_;
      });
      if (rv != 0) {
        raft_free(buf.base);  // raft owns it only when the call succeeds
        announce_in_flight_ = false;
      }
    }
  }
  if (!barrier_in_flight_) {
    barrier_request_.data = this;
    barrier_sent_at_ = now;
    barrier_term_ = term;
    barrier_in_flight_ = true;
    if (raft_barrier(r, &barrier_request_, [](struct raft_barrier* req, int result) {
          auto& self = *static_cast<LeaderValidator*>(req->data);
          self.barrier_in_flight_ = false;
          if (result == 0) {
            self.committed_barrier_sent_at_ = self.barrier_sent_at_;
            self.committed_barrier_term_ = self.barrier_term_;
          }
        }) != 0) {
      barrier_in_flight_ = false;
    }
  }
}

LeaderObservation LeaderValidator::observe(raft* r, raft_time now) const {
  LeaderObservation observation;
  const uint64_t term = r->current_term;
  observation.term = term;
  if (raft_state(r) == RAFT_LEADER) {
    if (announce_committed_term_ == term && committed_barrier_term_ == term &&
        now - committed_barrier_sent_at_ < election_timeout_) {
      observation.validated_leader = node_id_;
      observation.sole_voter = voter_count(r->configuration) == 1;
    }
    return observation;
  }
  if (raft_state(r) != RAFT_FOLLOWER) return observation;
  raft_id leader_id = 0;
  const char* leader_address = nullptr;
  raft_leader(r, &leader_id, &leader_address);
  const LeaderAnnounce& applied = state_.last_announce();
  if (leader_id == 0 || applied.raft_id != leader_id || applied.term != term) return observation;
  if (now - r->election_timer_start >= election_timeout_) return observation;
  if (session_up_ && !session_up_(applied.node_id)) return observation;
  observation.validated_leader = applied.node_id;
  return observation;
}

}  // namespace zctl
