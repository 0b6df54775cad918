#include "leader_validator.hpp"

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace zctl {

namespace {

// The receive hook. raft_io has no user pointer of its own (raft owns
// io->data), so hooked ios are found in a table; a process hosts one node,
// or a handful in the fixture tests, and raft receives a few messages per
// heartbeat, so one mutex is plenty.
using StartFn = int (*)(raft_io*, unsigned, raft_io_tick_cb, raft_io_recv_cb);

struct ContactHook {
  LeaderValidator* validator = nullptr;
  StartFn start = nullptr;  // the io's own start
};

std::mutex hooks_mutex;
std::unordered_map<raft_io*, ContactHook>& hooks() {
  static std::unordered_map<raft_io*, ContactHook> table;
  return table;
}
// raft's receive callback (one function for every raft instance), kept out
// of the table so a message still reaches raft if its validator is gone.
std::atomic<raft_io_recv_cb> raft_receive{nullptr};

void receive_and_timestamp(raft_io* io, raft_message* message) {
  if (message->type == RAFT_IO_APPEND_ENTRIES_RESULT) {
    std::lock_guard lock(hooks_mutex);
    const auto it = hooks().find(io);
    if (it != hooks().end()) {
      it->second.validator->heard(message->server_id, message->append_entries_result.term, io->time(io));
    }
  }
  raft_receive.load()(io, message);
}

int start_with_hook(raft_io* io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv) {
  StartFn start = nullptr;
  {
    std::lock_guard lock(hooks_mutex);
    start = hooks().at(io).start;
  }
  raft_receive.store(recv);
  return start(io, msecs, tick, receive_and_timestamp);
}

}  // namespace

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

LeaderValidator::~LeaderValidator() {
  if (watched_io_ == nullptr) return;
  std::lock_guard lock(hooks_mutex);
  hooks().erase(watched_io_);
}

void LeaderValidator::watch_contacts(raft_io* io) {
  std::lock_guard lock(hooks_mutex);
  hooks()[io] = ContactHook{this, io->start};
  io->start = start_with_hook;
  watched_io_ = io;
}

void LeaderValidator::tick(raft* r) {
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
  // Followers learn that the announce is committed from the next
  // AppendEntries, which on an idle cluster is a heartbeat later; an entry
  // right after it is sent at once and carries the new commit index.
  if (announce_committed_term_ == term && commit_published_term_ != term && !barrier_in_flight_) {
    barrier_request_.data = this;
    barrier_in_flight_ = true;
    if (raft_barrier(r, &barrier_request_, [](struct raft_barrier* req, int) {
          static_cast<LeaderValidator*>(req->data)->barrier_in_flight_ = false;
        }) == 0) {
      commit_published_term_ = term;
    } else {
      barrier_in_flight_ = false;
    }
  }
}

bool LeaderValidator::quorum_in_contact(const raft* r, raft_time now) const {
  unsigned voters = 0;
  unsigned in_contact = 0;
  for (unsigned i = 0; i < r->configuration.n; ++i) {
    const raft_server& server = r->configuration.servers[i];
    if (server.role != RAFT_VOTER) continue;
    ++voters;
    if (server.id == self_id_) {
      ++in_contact;
      continue;
    }
    const auto it = contacts_.find(server.id);
    if (it != contacts_.end() && it->second.term == r->current_term && now - it->second.at < election_timeout_) {
      ++in_contact;
    }
  }
  return in_contact > voters / 2;
}

LeaderObservation LeaderValidator::observe(raft* r, raft_time now) const {
  LeaderObservation observation;
  const uint64_t term = r->current_term;
  observation.term = term;
  if (raft_state(r) == RAFT_LEADER) {
    if (announce_committed_term_ == term && quorum_in_contact(r, now)) {
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
