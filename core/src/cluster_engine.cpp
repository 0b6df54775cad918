#include "cluster_engine.hpp"

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "leader_state.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/metrics.hpp"

namespace zctl {

namespace {

// The payload of the entry a new leader commits before it counts itself
// leader: "zctl-announce <term> <raft id> <node id>". Followers apply it
// to learn which node leads the term (raft only knows numeric ids).
constexpr std::string_view kAnnounceTag = "zctl-announce";
constexpr unsigned kSnapshotThreshold = 1024;  // entries: a barrier per heartbeat adds up
constexpr unsigned kSnapshotTrailing = 256;

struct Announce {
  uint64_t term = 0;
  raft_id id = 0;
  std::string node_id;
};

std::string encode_announce(const Announce& a) {
  std::string text =
      std::string(kAnnounceTag) + " " + std::to_string(a.term) + " " + std::to_string(a.id) + " " + a.node_id;
  // libraft's on-disk batches assume 8-byte aligned entry payloads: an
  // unpadded entry is written fine and then cannot be read back on restart.
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

std::optional<Announce> decode_announce(std::string_view text) {
  if (text.substr(0, kAnnounceTag.size()) != kAnnounceTag) return std::nullopt;
  Announce a;
  char node[65] = {};
  unsigned long long term = 0, id = 0;
  const std::string copy(text);
  if (std::sscanf(copy.c_str(), "zctl-announce %llu %llu %64s", &term, &id, node) != 3) return std::nullopt;
  a.term = term;
  a.id = id;
  a.node_id = node;
  return a;
}

// raft_digest() is raft's own stable hash; a node id maps to the same raft
// id on every node and across restarts.
raft_id raft_id_of(const std::string& node_id) {
  const raft_id id = raft_digest(node_id.c_str(), 0);
  return id == 0 ? 1 : id;
}

}  // namespace

struct ClusterEngine::Loop {
  Loop(ClusterSettings s, EventBus& b, MetricsRegistry& m, AnnouncementListener l);

  void run();  // the loop thread
  std::string init();
  void tick();
  void observe();
  void announce(const LeaderAnnouncement& a);
  void close_all();
  void close_raft_when_idle();
  void close_handles();
  void publish_status();

  ClusterSettings settings;
  EventBus& bus;
  AnnouncementListener listener;
  const raft_id self_id;

  std::thread thread;
  std::promise<std::string> init_result;  // empty string: started
  bool stop_requested = false;            // owner thread, before uv_async_send

  // Loop thread only.
  uv_loop_t loop{};
  uv_async_t stop_async{};
  uv_timer_t tick_timer{};
  uv_timer_t due_timer{};
  raft_uv_transport transport{};
  raft_io io{};
  raft_fsm fsm{};
  raft r{};
  bool raft_initialised = false;
  bool closing = false;
  int close_waits = 0;

  LeaderStateTracker tracker;
  struct raft_barrier barrier_request{};
  bool barrier_in_flight = false;
  raft_time barrier_sent_at = 0;
  uint64_t barrier_term = 0;
  raft_time committed_barrier_sent_at = 0;
  uint64_t committed_barrier_term = 0;
  struct raft_apply announce_request{};
  bool announce_in_flight = false;
  uint64_t announce_term = 0;            // the term of the announce in flight
  uint64_t announce_committed_term = 0;  // as leader: our announce of this term is committed
  Announce applied;                      // the last announce entry applied (any node)
  bool announced_self_leader = false;
  uint64_t flaps_reported = 0;
  uint64_t changes_reported = 0;

  mutable std::mutex status_mutex;
  ClusterStatus status;  // guarded by status_mutex

  Gauge& has_leader_gauge;
  Gauge& is_leader_gauge;
  Gauge& members_gauge;
  Gauge& term_gauge;
  Gauge& commit_gauge;
  Gauge& contact_gauge;
  Counter& leader_changes;
  Counter& flaps_suppressed;
};

ClusterEngine::Loop::Loop(ClusterSettings s, EventBus& b, MetricsRegistry& m, AnnouncementListener l)
    : settings(std::move(s)), bus(b), listener(std::move(l)), self_id(raft_id_of(settings.node_id)),
      tracker(settings.leader_stability),
      has_leader_gauge(m.gauge("controller_cluster_has_leader", "1 while a validated leader is announced.").with({})),
      is_leader_gauge(m.gauge("controller_cluster_is_leader", "1 while this node is the announced leader.").with({})),
      members_gauge(m.gauge("controller_cluster_members", "Servers in the current Raft configuration.").with({})),
      term_gauge(m.gauge("controller_cluster_term", "This node's current Raft term.").with({})),
      commit_gauge(m.gauge("controller_cluster_commit_index", "Highest Raft log index known committed.").with({})),
      contact_gauge(m.gauge("controller_cluster_leader_contact_seconds",
                            "Seconds since this node last heard from the leader (0 on the leader).")
                        .with({})),
      leader_changes(m.counter("controller_cluster_leader_changes_total",
                               "Announcements of a validated leader different from the previous one.")
                         .with({})),
      flaps_suppressed(m.counter("controller_cluster_leader_flaps_suppressed_total",
                                 "Leader-state changes that reverted within cluster.leader_stability.")
                           .with({})) {}

namespace {

ClusterEngine::Loop& owner(raft_fsm* fsm) { return *static_cast<ClusterEngine::Loop*>(fsm->data); }

int fsm_apply(raft_fsm* fsm, const raft_buffer* buf, void** result) {
  *result = nullptr;
  const std::string_view text(static_cast<const char*>(buf->base), buf->len);
  if (auto a = decode_announce(text)) owner(fsm).applied = *a;
  return 0;
}

// The state machine's whole state is the last announce: a snapshot is that
// one entry's text.
int fsm_snapshot(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs) {
  const std::string text = encode_announce(owner(fsm).applied);
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

int fsm_restore(raft_fsm* fsm, raft_buffer* buf) {
  const std::string_view text(static_cast<const char*>(buf->base), buf->len);
  if (auto a = decode_announce(text)) owner(fsm).applied = *a;
  raft_free(buf->base);  // restore owns it
  return 0;
}

}  // namespace

std::string ClusterEngine::Loop::init() {
  std::error_code ec;
  std::filesystem::create_directories(settings.data_dir, ec);
  if (ec) return "cannot create " + settings.data_dir + ": " + ec.message();
  if (int rv = raft_uv_tcp_init(&transport, &loop); rv != 0) return std::string("raft transport: ") + raft_strerror(rv);
  if (int rv = raft_uv_init(&io, &loop, settings.data_dir.c_str(), &transport); rv != 0) {
    raft_uv_tcp_close(&transport);
    return "raft storage in " + settings.data_dir + ": " + (io.errmsg[0] != '\0' ? io.errmsg : raft_strerror(rv));
  }
  fsm.version = 1;
  fsm.data = this;
  fsm.apply = fsm_apply;
  fsm.snapshot = fsm_snapshot;
  fsm.restore = fsm_restore;
  r.data = this;
  if (int rv = raft_init(&r, &io, &fsm, self_id, settings.raft_address.c_str()); rv != 0) {
    const std::string why = raft_errmsg(&r);
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    return "raft: " + (why.empty() ? std::string(raft_strerror(rv)) : why);
  }
  raft_initialised = true;
  raft_set_election_timeout(&r, static_cast<unsigned>(settings.election_timeout.count()));
  raft_set_heartbeat_timeout(&r, static_cast<unsigned>(settings.heartbeat.count()));
  raft_set_pre_vote(&r, true);
  raft_set_snapshot_threshold(&r, kSnapshotThreshold);
  raft_set_snapshot_trailing(&r, kSnapshotTrailing);

  raft_configuration configuration;
  raft_configuration_init(&configuration);
  int rv = raft_configuration_add(&configuration, self_id, settings.raft_address.c_str(), RAFT_VOTER);
  if (rv == 0) {
    rv = raft_bootstrap(&r, &configuration);
    if (rv == 0) log_info("cluster: bootstrapped a new single-node cluster in " + settings.data_dir);
    if (rv == RAFT_CANTBOOTSTRAP) rv = 0;  // a restart: the log already holds the configuration
  }
  raft_configuration_close(&configuration);
  if (rv == 0) rv = raft_start(&r);
  if (rv != 0) return "raft: " + std::string(raft_errmsg(&r)[0] != '\0' ? raft_errmsg(&r) : raft_strerror(rv));
  return {};
}

void ClusterEngine::Loop::run() {
  uv_loop_init(&loop);
  uv_async_init(&loop, &stop_async, [](uv_async_t* handle) { static_cast<Loop*>(handle->data)->close_all(); });
  stop_async.data = this;
  uv_timer_init(&loop, &tick_timer);
  tick_timer.data = this;
  uv_timer_init(&loop, &due_timer);
  due_timer.data = this;

  const std::string error = init();
  init_result.set_value(error);
  if (error.empty()) {
    const auto every = static_cast<uint64_t>(settings.heartbeat.count());
    uv_timer_start(&tick_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->tick(); }, 0, every);
  } else {
    close_all();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) log_warn("cluster: the raft loop closed with handles still open");
}

void ClusterEngine::Loop::close_all() {
  if (closing) return;
  closing = true;
  uv_timer_stop(&tick_timer);
  uv_timer_stop(&due_timer);
  if (!raft_initialised) {
    close_handles();
    return;
  }
  close_raft_when_idle();
}

// raft 0.15 can crash when it is closed while an entry it appended is still
// being written (the write completes into freed state), so the close waits
// for our announce and barrier to finish first, for at most 2 s.
void ClusterEngine::Loop::close_raft_when_idle() {
  if ((announce_in_flight || barrier_in_flight) && close_waits++ < 400) {
    uv_timer_start(&due_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->close_raft_when_idle(); }, 5, 0);
    return;
  }
  // raft first, then its I/O and transport, then our handles: the loop ends
  // when the last handle is closed.
  raft_close(&r, [](raft* closed) {
    Loop& self = *static_cast<Loop*>(closed->data);
    raft_uv_close(&self.io);
    raft_uv_tcp_close(&self.transport);
    self.close_handles();
  });
}

void ClusterEngine::Loop::close_handles() {
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&due_timer), nullptr);
}

void ClusterEngine::Loop::tick() {
  if (closing) return;
  const raft_time now = uv_now(&loop);
  const bool leader = raft_state(&r) == RAFT_LEADER;
  const uint64_t term = r.current_term;
  if (leader && announce_committed_term != term && !announce_in_flight) {
    // A new term of ours: commit the announce entry first (raft 0.15 does
    // not commit a no-op on election, and may count replicas of older
    // entries as committed, so nothing is trusted before this).
    const std::string text = encode_announce({term, self_id, settings.node_id});
    raft_buffer buf;
    buf.base = raft_malloc(text.size());
    if (buf.base == nullptr) return;
    buf.len = text.size();
    std::memcpy(buf.base, text.data(), text.size());
    announce_request.data = this;
    announce_term = term;
    announce_in_flight = true;
    const int rv = raft_apply(&r, &announce_request, &buf, 1, [](struct raft_apply* req, int result, void*) {
      Loop& self = *static_cast<Loop*>(req->data);
      self.announce_in_flight = false;
      if (result == 0) self.announce_committed_term = self.announce_term;
    });
    if (rv != 0) {
      raft_free(buf.base);  // raft owns it only when the call succeeds
      announce_in_flight = false;
    }
  }
  if (leader && !barrier_in_flight) {
    barrier_request.data = this;
    barrier_sent_at = now;
    barrier_term = term;
    barrier_in_flight = true;
    if (raft_barrier(&r, &barrier_request, [](struct raft_barrier* req, int result) {
          Loop& self = *static_cast<Loop*>(req->data);
          self.barrier_in_flight = false;
          if (result == 0) {
            self.committed_barrier_sent_at = self.barrier_sent_at;
            self.committed_barrier_term = self.barrier_term;
          }
        }) != 0) {
      barrier_in_flight = false;
    }
  }
  observe();
}

void ClusterEngine::Loop::observe() {
  const raft_time now = uv_now(&loop);
  const uint64_t term = r.current_term;
  const auto timeout = static_cast<raft_time>(settings.election_timeout.count());
  LeaderObservation observation;
  observation.term = term;
  double contact = 0;
  if (raft_state(&r) == RAFT_LEADER) {
    if (announce_committed_term == term && committed_barrier_term == term &&
        now - committed_barrier_sent_at < timeout) {
      observation.validated_leader = settings.node_id;
    }
  } else {
    raft_id leader_id = 0;
    const char* leader_address = nullptr;
    raft_leader(&r, &leader_id, &leader_address);
    const raft_time since = now - r.election_timer_start;
    contact = static_cast<double>(since) / 1000.0;
    if (leader_id != 0 && applied.id == leader_id && applied.term == term && since < timeout) {
      observation.validated_leader = applied.node_id;
    }
  }
  contact_gauge.set(contact);
  term_gauge.set(static_cast<double>(term));
  commit_gauge.set(static_cast<double>(r.commit_index));
  members_gauge.set(static_cast<double>(r.configuration.n));

  if (auto a = tracker.observe(LeaderStateTracker::Clock::now(), observation)) announce(*a);
  if (tracker.flaps_suppressed() > flaps_reported) {
    flaps_suppressed.inc(tracker.flaps_suppressed() - flaps_reported);
    flaps_reported = tracker.flaps_suppressed();
  }
  if (const auto due = tracker.next_check()) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*due - LeaderStateTracker::Clock::now());
    uv_timer_start(&due_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->observe(); },
                   static_cast<uint64_t>(std::max<int64_t>(0, wait.count()) + 1), 0);
  }
  publish_status();
}

void ClusterEngine::Loop::announce(const LeaderAnnouncement& a) {
  const bool self_leads = a.kind == LeaderAnnouncement::Kind::has_leader && a.leader_id == settings.node_id;
  if (a.kind == LeaderAnnouncement::Kind::has_leader) {
    log_info("cluster: leader " + a.leader_id + " (term " + std::to_string(a.term) + ")");
    bus.emit("cluster", "state.has_leader", EventFields().add("leaderId", a.leader_id).add("term", a.term));
  } else {
    log_warn("cluster: no validated leader (term " + std::to_string(a.term) + ")");
    EventFields fields;
    if (a.last_leader_id) fields.add("lastLeaderId", *a.last_leader_id);
    fields.add("term", a.term);
    bus.emit("cluster", "state.is_leaderless", fields);
  }
  if (self_leads != announced_self_leader) {
    announced_self_leader = self_leads;
    std::string peers = "[";
    for (unsigned i = 0; i < r.configuration.n; ++i) {
      if (i > 0) peers += ',';
      json::append_string(peers, r.configuration.servers[i].address);
    }
    peers += ']';
    bus.emit("cluster", self_leads ? "leadership.gained" : "leadership.lost",
             EventFields().add("term", a.term).add_raw("peers", peers));
  }
  if (tracker.leader_changes() > changes_reported) {
    leader_changes.inc(tracker.leader_changes() - changes_reported);
    changes_reported = tracker.leader_changes();
  }
  has_leader_gauge.set(a.kind == LeaderAnnouncement::Kind::has_leader ? 1 : 0);
  is_leader_gauge.set(self_leads ? 1 : 0);
  publish_status();
  if (listener) listener();
}

void ClusterEngine::Loop::publish_status() {
  std::lock_guard lock(status_mutex);
  status.state_known = tracker.announced();
  const auto leader = tracker.announced_leader();
  status.has_leader = leader.has_value();
  status.leader_id = leader.value_or("");
  status.is_leader = leader && *leader == settings.node_id;
  status.term = r.current_term;
  status.commit_index = r.commit_index;
  status.members = r.configuration.n;
}

ClusterEngine::ClusterEngine(ClusterSettings settings, EventBus& bus, MetricsRegistry& metrics,
                             AnnouncementListener on_announcement)
    : loop_(std::make_unique<Loop>(std::move(settings), bus, metrics, std::move(on_announcement))) {}

ClusterEngine::~ClusterEngine() { stop(); }

void ClusterEngine::start() {
  Loop& l = *loop_;
  auto result = l.init_result.get_future();
  l.thread = std::thread([&l] { l.run(); });
  const std::string error = result.get();
  if (!error.empty()) {
    l.thread.join();
    throw std::runtime_error(error);
  }
}

void ClusterEngine::stop() {
  Loop& l = *loop_;
  if (!l.thread.joinable()) return;
  uv_async_send(&l.stop_async);
  l.thread.join();
}

ClusterStatus ClusterEngine::status() const {
  std::lock_guard lock(loop_->status_mutex);
  return loop_->status;
}

}  // namespace zctl
