#include "cluster_engine.hpp"

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "cluster_state.hpp"
#include "leader_state.hpp"
#include "leader_validator.hpp"
#include "raft_transport.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/metrics.hpp"

namespace zctl {

namespace {

constexpr unsigned kSnapshotThreshold = 1024;  // entries
constexpr unsigned kSnapshotTrailing = 256;
constexpr int kCloseWaitRounds = 400;
constexpr unsigned kConnectRetryDelayMs = 200;  // x 5 ms: how long a close waits for our entries in flight

const char* role_name(int role) {
  switch (role) {
    case RAFT_VOTER:
      return "voter";
    case RAFT_STANDBY:
      return "standby";
    default:
      return "spare";
  }
}

std::string raft_error(raft* r, int rv) {
  const char* message = raft_errmsg(r);
  return message != nullptr && message[0] != '\0' ? message : raft_strerror(rv);
}

ClusterReply reply_of(ClusterReply::Code code, std::string detail) {
  ClusterReply reply;
  reply.code = code;
  reply.detail = std::move(detail);
  return reply;
}

}  // namespace

// One membership change, from the request to its answer. Changes run one
// at a time (libraft refuses a second configuration change while one is in
// flight); each step's raft request lives here until its callback.
struct ChangeOp {
  enum class Kind { join, authorize, remove, record };
  Kind kind = Kind::record;
  JoinRequest join;
  MembershipAuthority::DecisionCallback join_done;
  std::string node_id;
  ClusterEngine::ReplyCallback done;
  MemberRecord record;
  int step = 0;
  bool configuration_changed = false;  // a join that added or promoted the node
  ClusterEngine::Loop* loop = nullptr;
  struct raft_apply apply_request{};
  struct raft_barrier barrier_request{};
  struct raft_change change_request{};
};

struct ClusterEngine::Loop {
  RaftTransportOptions transport_options() const {
    // A dead peer is noticed within about one election timeout.
    RaftTransportOptions o;
    const auto timeout = static_cast<unsigned>(settings.election_timeout.count());
    o.connect_timeout_ms = timeout;
    o.user_timeout_ms = timeout;
    return o;
  }
  Loop(ClusterSettings s, EventBus& b, MetricsRegistry& m, AnnouncementListener l, MembersListener ml);

  void run();  // the loop thread
  std::string init();
  void tick();
  void observe();
  void on_loop_pass();
  void peer_lost(const std::string& node_id);
  void announce(const LeaderAnnouncement& a);
  void publish_status();
  void check_members();
  std::vector<ClusterMemberView> member_views() const;
  std::optional<std::string> leader_known() const;  // this term's announced leader's node id

  // Work from other threads.
  void post(std::function<void(bool running)> task);
  void drain_posted(bool running);

  // Membership changes.
  void enqueue(std::unique_ptr<ChangeOp> op);
  void next_change();
  void advance(int result);
  void finish_change();
  bool join_allowed(const std::string& node_id) const;
  bool refuse_unless_leader(ChangeOp& op);
  void fail_change(ChangeOp& op, const std::string& reason, const std::string& detail);
  bool submit_entry(ChangeOp& op, const std::string& entry);
  bool submit_barrier(ChangeOp& op);
  void start_transfer(std::string node_id, ReplyCallback done);
  mesh::Accepted accepted_message() const;

  // Shutdown.
  void begin_stop();
  void close_raft_when_idle();
  void close_raft();
  static void close_io_once(raft_io* io, raft_io_close_cb cb);
  void close_handles();
  void on_removed();

  ClusterSettings settings;
  EventBus& bus;
  AnnouncementListener listener;
  MembersListener members_listener;
  const raft_id self_id;

  std::thread thread;
  std::promise<std::string> init_result;  // empty string: started

  std::mutex posted_mutex;
  std::deque<std::function<void(bool)>> posted;  // guarded by posted_mutex
  bool accepting_posts = true;                   // guarded by posted_mutex

  // Loop thread only.
  uv_loop_t loop{};
  uv_async_t work_async{};
  uv_timer_t tick_timer{};
  uv_timer_t due_timer{};
  uv_timer_t close_timer{};
  uv_check_t change_check{};
  std::array<uint64_t, 6> last_fingerprint{};
  raft_uv_transport transport{};
  raft_io io{};
  // raft_uv's own close, and raft's callback for it, passed on at most once
  // (see close_io_once()).
  void (*uv_close_io)(raft_io*, raft_io_close_cb) = nullptr;
  raft_io_close_cb raft_io_closed_cb = nullptr;
  bool raft_io_close_fired = false;
  raft_fsm fsm{};
  raft r{};
  bool raft_initialised = false;
  bool raft_running = false;  // raft started and not closed (or closing)
  bool stopping = false;      // stop() asked for the whole loop to end
  bool removed = false;       // this node was removed from the cluster
  bool removed_self_applied = false;  // set by the FSM, acted upon in tick()
  int close_waits = 0;

  ClusterState state;
  LeaderValidator validator;
  LeaderStateTracker tracker;
  bool announcements_open = false;  // see ClusterEngine::open_announcements()
  std::vector<LeaderAnnouncement> held_announcements;
  bool announced_self_leader = false;
  raft_time last_observed = 0;
  uint64_t flaps_reported = 0;
  uint64_t changes_reported = 0;
  std::optional<std::string> members_signature;  // nullopt until the first look
  std::vector<ClusterMemberView> members_now;     // as of the last check_members(), leader flags unset
  raft_time started_at = 0;

  std::unique_ptr<ChangeOp> change;  // in flight
  std::deque<std::unique_ptr<ChangeOp>> changes_waiting;
  struct raft_transfer transfer_request{};
  bool transfer_in_flight = false;
  std::vector<ReplyCallback> transfer_waiters;
  std::string transfer_target;

  mutable std::mutex status_mutex;
  ClusterView view;  // guarded by status_mutex

  Gauge& has_leader_gauge;
  Gauge& is_leader_gauge;
  Gauge& members_gauge;
  Gauge& term_gauge;
  Gauge& commit_gauge;
  Gauge& contact_gauge;
  Counter& leader_changes;
  Counter& flaps_suppressed;
  Counter& leaderless_seconds;
  Counter& membership_changes;
};

ClusterEngine::Loop::Loop(ClusterSettings s, EventBus& b, MetricsRegistry& m, AnnouncementListener l,
                          MembersListener ml)
    : settings(std::move(s)), bus(b), listener(std::move(l)), members_listener(std::move(ml)),
      self_id(raft_id_of(settings.node_id)),
      validator(settings.node_id, self_id, static_cast<raft_time>(settings.election_timeout.count()), state,
                settings.session_up),
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
                           .with({})),
      leaderless_seconds(m.counter("controller_cluster_leaderless_seconds_total",
                                   "Time this node observed no validated leader, before debouncing.")
                             .with({})),
      membership_changes(m.counter("controller_cluster_membership_changes_total",
                                   "Raft configuration changes this node made as leader (joins and removals).")
                             .with({})) {}

namespace {

ClusterEngine::Loop& owner(raft_fsm* fsm) { return *static_cast<ClusterEngine::Loop*>(fsm->data); }

int fsm_apply(raft_fsm* fsm, const raft_buffer* buf, void** result) {
  *result = nullptr;
  ClusterEngine::Loop& self = owner(fsm);
  const std::string_view text(static_cast<const char*>(buf->base), buf->len);
  const bool was_recorded = self.state.member(self.settings.node_id) != nullptr;
  self.state.apply(text);
  // Only a forget entry drops a record: for this node's own, it is the
  // leader telling it, through the log, that it is being removed (the
  // removal itself never reaches it).
  if (was_recorded && self.state.member(self.settings.node_id) == nullptr) {
    self.removed_self_applied = true;
  }
  return 0;
}

int fsm_snapshot(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n_bufs) {
  return snapshot_cluster_state(owner(fsm).state, bufs, n_bufs);
}

int fsm_restore(raft_fsm* fsm, raft_buffer* buf) {
  restore_cluster_state(owner(fsm).state, buf);
  return 0;
}

}  // namespace

std::string ClusterEngine::Loop::init() {
  std::error_code ec;
  std::filesystem::create_directories(settings.data_dir, ec);
  if (ec) return "cannot create " + settings.data_dir + ": " + ec.message();
  if (int rv = raft_transport_init(&transport, &loop, transport_options()); rv != 0) {
    return std::string("raft transport: ") + raft_strerror(rv);
  }
  if (int rv = raft_uv_init(&io, &loop, settings.data_dir.c_str(), &transport); rv != 0) {
    raft_transport_close(&transport);
    return "raft storage in " + settings.data_dir + ": " + (io.errmsg[0] != '\0' ? io.errmsg : raft_strerror(rv));
  }
  // Reconnect soon after a partition heals; raft waits this long after a
  // failed connect (1 s by default).
  raft_uv_set_connect_retry_delay(&io, kConnectRetryDelayMs);
  fsm.version = 1;
  fsm.data = this;
  fsm.apply = fsm_apply;
  fsm.snapshot = fsm_snapshot;
  fsm.restore = fsm_restore;
  r.data = this;
  if (int rv = raft_init(&r, &io, &fsm, self_id, settings.raft_address.c_str()); rv != 0) {
    const std::string why = raft_errmsg(&r);
    raft_uv_close(&io);
    raft_transport_close(&transport);
    return "raft: " + (why.empty() ? std::string(raft_strerror(rv)) : why);
  }
  raft_initialised = true;
  uv_close_io = io.close;
  io.close = close_io_once;
  validator.watch_contacts(&io);
  raft_set_election_timeout(&r, static_cast<unsigned>(settings.election_timeout.count()));
  raft_set_heartbeat_timeout(&r, static_cast<unsigned>(settings.heartbeat.count()));
  raft_set_pre_vote(&r, true);
  raft_set_snapshot_threshold(&r, kSnapshotThreshold);
  raft_set_snapshot_trailing(&r, kSnapshotTrailing);

  int rv = 0;
  if (settings.bootstrap) {
    raft_configuration configuration;
    raft_configuration_init(&configuration);
    rv = raft_configuration_add(&configuration, self_id, settings.raft_address.c_str(), RAFT_VOTER);
    if (rv == 0) {
      rv = raft_bootstrap(&r, &configuration);
      if (rv == 0) log_info("cluster: bootstrapped a new single-node cluster in " + settings.data_dir);
      if (rv == RAFT_CANTBOOTSTRAP) rv = 0;  // a restart: the log already holds the configuration
    }
    raft_configuration_close(&configuration);
  }
  if (rv == 0) rv = raft_start(&r);
  if (rv != 0) {
    // raft_uv does not copy the transport's message (listen failures: the
    // address in use) into its own, which then only says "I/O error".
    if (transport.errmsg[0] != '\0') return std::string("raft: ") + transport.errmsg;
    return "raft: " + raft_error(&r, rv);
  }
  raft_running = true;
  return {};
}

void ClusterEngine::Loop::run() {
  uv_loop_init(&loop);
  uv_async_init(&loop, &work_async, [](uv_async_t* handle) { static_cast<Loop*>(handle->data)->drain_posted(true); });
  work_async.data = this;
  for (auto* timer : {&tick_timer, &due_timer, &close_timer}) {
    uv_timer_init(&loop, timer);
    timer->data = this;
  }
  uv_check_init(&loop, &change_check);
  change_check.data = this;
  const std::string error = init();
  init_result.set_value(error);
  if (error.empty()) {
    started_at = uv_now(&loop);
    uv_check_start(&change_check, [](uv_check_t* c) { static_cast<Loop*>(c->data)->on_loop_pass(); });
    const auto every = static_cast<uint64_t>(settings.heartbeat.count());
    uv_timer_start(&tick_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->tick(); }, 0, every);
  } else {
    stopping = true;
    {
      std::lock_guard lock(posted_mutex);
      accepting_posts = false;
    }
    // raft_start failed after raft_init: raft still owns its timers, its
    // I/O and the transport, which only raft_close releases.
    if (raft_initialised) {
      close_raft();
    } else {
      close_handles();
    }
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  // Nothing is left that could call back into raft_uv or the transport; an
  // initialised raft keeps the loop running until raft_close() completed.
  if (raft_initialised) {
    raft_uv_close(&io);
    raft_transport_close(&transport);
  }
  if (uv_loop_close(&loop) != 0) log_warn("cluster: the raft loop closed with handles still open");
}

// ---- work from other threads ------------------------------------------------

void ClusterEngine::Loop::post(std::function<void(bool running)> task) {
  {
    std::lock_guard lock(posted_mutex);
    if (accepting_posts) {
      posted.push_back(std::move(task));
      uv_async_send(&work_async);
      return;
    }
  }
  task(false);  // the loop has ended: answer now, on the caller's thread
}

void ClusterEngine::Loop::drain_posted(bool running) {
  std::deque<std::function<void(bool)>> tasks;
  {
    std::lock_guard lock(posted_mutex);
    tasks.swap(posted);
  }
  for (auto& task : tasks) task(running && !stopping);
}

// ---- the heartbeat ------------------------------------------------------------

void ClusterEngine::Loop::tick() {
  if (stopping) return;
  if (raft_running) {
    if (removed_self_applied && !removed) on_removed();
    if (raft_running) validator.tick(&r);
  }
  // The leader keeps its own record (where its mesh port and admin API are)
  // current, so followers can redirect joins and admin calls to it.
  if (raft_running && raft_state(&r) == RAFT_LEADER && tracker.announced_leader() == settings.node_id &&
      !change && changes_waiting.empty()) {
    const MemberRecord* mine = state.member(settings.node_id);
    MemberRecord wanted{settings.node_id, self_id, settings.raft_address, settings.mesh_address,
                        settings.admin_address};
    if (mine == nullptr || !(*mine == wanted)) {
      auto op = std::make_unique<ChangeOp>();
      op->kind = ChangeOp::Kind::record;
      op->record = std::move(wanted);
      enqueue(std::move(op));
    }
  }
  observe();
}

// After every I/O phase: when raft's state, term or leader, the applied
// announce or our own validation moved, act now instead of at the next
// heartbeat tick (an election, a handover or a commit is seen within the
// millisecond, not up to a heartbeat later).
void ClusterEngine::Loop::on_loop_pass() {
  if (stopping || !raft_running) return;
  raft_id leader_id = 0;
  const char* address = nullptr;
  raft_leader(&r, &leader_id, &address);
  const std::array<uint64_t, 6> fingerprint{static_cast<uint64_t>(raft_state(&r)), r.current_term, leader_id,
                                            state.last_announce().term, state.last_announce().raft_id,
                                            validator.progress()};
  if (fingerprint == last_fingerprint) return;
  last_fingerprint = fingerprint;
  tick();
}

// The mesh session with the leader closed (its process died, or its host
// reset the connection): libraft 0.15 would keep the dead leader until this
// follower's own election timer fires, and refuses votes until then, so an
// election waits for the slowest survivor. Expire the timer now; pre-vote
// keeps a live leader in place if only the session was lost.
void ClusterEngine::Loop::peer_lost(const std::string& node_id) {
  if (stopping || !raft_running || raft_state(&r) != RAFT_FOLLOWER) return;
  raft_id leader_id = 0;
  const char* address = nullptr;
  raft_leader(&r, &leader_id, &address);
  if (leader_id == 0 || leader_id != raft_id_of(node_id)) return;
  const auto timeout = static_cast<raft_time>(settings.election_timeout.count());
  const raft_time now = uv_now(&loop);
  if (now < 2 * timeout + 1) return;
  log_info("cluster: the mesh session with leader " + node_id + " closed; starting an election now");
  r.election_timer_start = now - 2 * timeout - 1;
}

void ClusterEngine::Loop::observe() {
  if (stopping) return;
  const raft_time now = uv_now(&loop);
  LeaderObservation observation;
  double contact = 0;
  if (raft_running) {
    observation = validator.observe(&r, now);
    if (raft_state(&r) != RAFT_LEADER) contact = static_cast<double>(now - r.election_timer_start) / 1000.0;
    term_gauge.set(static_cast<double>(r.current_term));
    commit_gauge.set(static_cast<double>(r.commit_index));
    members_gauge.set(static_cast<double>(r.configuration.n));
  } else {
    observation.term = r.current_term;
  }
  contact_gauge.set(contact);
  if (!observation.validated_leader && last_observed != 0 && now > last_observed) {
    leaderless_seconds.inc(static_cast<double>(now - last_observed) / 1000.0);
  }
  last_observed = now;

  const bool starting =
      leader_unknown_at_startup(tracker.announced(), observation, now - started_at,
                                static_cast<raft_time>(settings.election_timeout.count()),
                                static_cast<raft_time>(settings.heartbeat.count()));
  if (!starting) {
    if (auto a = tracker.observe(LeaderStateTracker::Clock::now(), observation)) {
      if (announcements_open) {
        announce(*a);
      } else {
        held_announcements.push_back(std::move(*a));
      }
    }
  }
  if (tracker.flaps_suppressed() > flaps_reported) {
    flaps_suppressed.inc(static_cast<double>(tracker.flaps_suppressed() - flaps_reported));
    flaps_reported = tracker.flaps_suppressed();
  }
  if (const auto due = tracker.next_check()) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*due - LeaderStateTracker::Clock::now());
    uv_timer_start(&due_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->observe(); },
                   static_cast<uint64_t>(std::max<int64_t>(0, wait.count()) + 1), 0);
  }
  check_members();
  {
    std::lock_guard lock(status_mutex);
    view.last_contact_seconds = contact;
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
    leader_changes.inc(static_cast<double>(tracker.leader_changes() - changes_reported));
    changes_reported = tracker.leader_changes();
  }
  has_leader_gauge.set(a.kind == LeaderAnnouncement::Kind::has_leader ? 1 : 0);
  is_leader_gauge.set(self_leads ? 1 : 0);
  publish_status();
  if (listener) listener();
}

std::vector<ClusterMemberView> ClusterEngine::Loop::member_views() const {
  std::vector<ClusterMemberView> members;
  for (unsigned i = 0; i < r.configuration.n; ++i) {
    const raft_server& server = r.configuration.servers[i];
    ClusterMemberView m;
    m.raft_addr = server.address;
    m.role = role_name(server.role);
    if (const MemberRecord* record = state.member_by_raft_id(server.id)) {
      m.id = record->node_id;
      m.mesh_addr = record->mesh_addr;
      m.admin_addr = record->admin_addr;
    } else if (server.id == self_id) {
      m.id = settings.node_id;
      m.mesh_addr = settings.mesh_address;
      m.admin_addr = settings.admin_address;
    } else {
      m.id = "raft-" + std::to_string(server.id);  // recorded once its join entry is applied here
    }
    members.push_back(std::move(m));
  }
  std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return members;
}

// members.changed whenever the configuration or a member's addresses change.
void ClusterEngine::Loop::check_members() {
  if (!raft_running) return;
  auto members = member_views();
  std::string signature;
  for (const auto& m : members) {
    signature += m.id + ' ' + m.raft_addr + ' ' + m.mesh_addr + ' ' + m.admin_addr + ' ' + m.role + '\n';
  }
  if (members_signature && signature == *members_signature) return;
  // The membership a node starts with (from its log) is not a change.
  const bool changed = members_signature.has_value();
  members_signature = std::move(signature);
  const uint64_t index = static_cast<uint64_t>(std::max(r.configuration_index, r.configuration_uncommitted_index));
  if (changed && !members.empty()) {
    std::string peers = "[";
    for (const auto& m : members) {
      if (peers.size() > 1) peers += ',';
      peers += "{\"id\":";
      json::append_string(peers, m.id);
      peers += ",\"addr\":";
      json::append_string(peers, m.mesh_addr);
      peers += ",\"raftAddr\":";
      json::append_string(peers, m.raft_addr);
      peers += m.role == "voter" ? ",\"voter\":true}" : ",\"voter\":false}";
    }
    peers += ']';
    bus.emit("cluster", "members.changed", EventFields().add_raw("peers", peers).add("index", static_cast<uint64_t>(index)));
  }
  {
    std::lock_guard lock(status_mutex);
    view.configuration_index = index;
  }
  if (members_listener) members_listener(members);
  members_now = std::move(members);
}

void ClusterEngine::Loop::publish_status() {
  // What was emitted: nothing before open_announcements().
  const auto leader = announcements_open ? tracker.announced_leader() : std::nullopt;
  std::lock_guard lock(status_mutex);
  ClusterStatus& status = view.status;
  status.state_known = announcements_open && tracker.announced();
  status.has_leader = leader.has_value();
  status.leader_id = leader.value_or("");
  status.is_leader = leader && *leader == settings.node_id;
  status.term = r.current_term;
  status.commit_index = r.commit_index;
  status.members = raft_running ? r.configuration.n : 0;
  view.node_id = settings.node_id;
  if (removed) {
    view.state = "removed";
  } else if (!raft_running) {
    view.state = "unavailable";
  } else {
    switch (raft_state(&r)) {
      case RAFT_LEADER:
        view.state = "leader";
        break;
      case RAFT_FOLLOWER:
        view.state = "follower";
        break;
      case RAFT_CANDIDATE:
        view.state = "candidate";
        break;
      default:
        view.state = "unavailable";
    }
  }
  view.authorized.assign(state.allowed().begin(), state.allowed().end());
  view.members = removed ? std::vector<ClusterMemberView>{} : members_now;
  for (auto& m : view.members) m.leader = leader && *leader == m.id;  // follows the announcements
}

std::optional<std::string> ClusterEngine::Loop::leader_known() const {
  if (!raft_running) return std::nullopt;
  raft_id leader_id = 0;
  const char* address = nullptr;
  raft_leader(const_cast<raft*>(&r), &leader_id, &address);
  const LeaderAnnounce& a = state.last_announce();
  if (leader_id == 0 || a.raft_id != leader_id || a.term != r.current_term) return std::nullopt;
  return a.node_id;
}

// ---- membership changes -------------------------------------------------------

void ClusterEngine::Loop::enqueue(std::unique_ptr<ChangeOp> op) {
  op->loop = this;
  changes_waiting.push_back(std::move(op));
  next_change();
}

void ClusterEngine::Loop::next_change() {
  while (!change && !changes_waiting.empty() && !stopping) {
    change = std::move(changes_waiting.front());
    changes_waiting.pop_front();
    change->step = 0;
    advance(0);
  }
}

// Answers the request with not_leader (with where the leader is) or
// no_leader; false when this node leads and may change the configuration.
bool ClusterEngine::Loop::refuse_unless_leader(ChangeOp& op) {
  if (raft_running && raft_state(&r) == RAFT_LEADER) return false;
  const auto leader = removed ? std::nullopt : leader_known();
  const MemberRecord* record = leader ? state.member(*leader) : nullptr;
  if (op.kind == ChangeOp::Kind::join) {
    if (record != nullptr && !record->mesh_addr.empty()) {
      op.join_done(JoinDecision::redirect_to(mesh::Redirect{*leader, record->mesh_addr}));
    } else {
      op.join_done(JoinDecision::reject("no_leader", "this node knows no leader to add the node; retry shortly"));
    }
  } else if (op.done) {
    if (leader) {
      ClusterReply reply = reply_of(ClusterReply::Code::not_leader, "node " + *leader + " leads the cluster");
      reply.leader_id = *leader;
      reply.leader_admin = record != nullptr ? record->admin_addr : "";
      op.done(std::move(reply));
    } else {
      op.done(reply_of(ClusterReply::Code::no_leader, "the cluster has no leader right now; retry shortly"));
    }
  }
  return true;
}

void ClusterEngine::Loop::fail_change(ChangeOp& op, const std::string& reason, const std::string& detail) {
  log_warn("cluster: " + detail);
  if (op.kind == ChangeOp::Kind::join) {
    op.join_done(JoinDecision::reject(reason, detail));
  } else if (op.done) {
    op.done(reply_of(reason == "not_member" ? ClusterReply::Code::not_member : ClusterReply::Code::failed, detail));
  }
}

bool ClusterEngine::Loop::submit_entry(ChangeOp& op, const std::string& entry) {
  raft_buffer buf;
  buf.base = raft_malloc(entry.size());
  if (buf.base == nullptr) return false;
  buf.len = entry.size();
  std::memcpy(buf.base, entry.data(), entry.size());
  op.apply_request.data = &op;
  const int rv = raft_apply(&r, &op.apply_request, &buf, 1, [](struct raft_apply* req, int result, void*) {
    static_cast<ChangeOp*>(req->data)->loop->advance(result);
  });
  if (rv != 0) raft_free(buf.base);
  return rv == 0;
}

bool ClusterEngine::Loop::submit_barrier(ChangeOp& op) {
  op.barrier_request.data = &op;
  return raft_barrier(&r, &op.barrier_request, [](struct raft_barrier* req, int result) {
           static_cast<ChangeOp*>(req->data)->loop->advance(result);
         }) == 0;
}

mesh::Accepted ClusterEngine::Loop::accepted_message() const {
  mesh::Accepted accepted;
  accepted.leader_id = leader_known().value_or(settings.node_id);  // this node when it knows no leader
  for (const auto& m : member_views()) {
    if (accepted.members.size() >= mesh::kMaxMembers) break;
    accepted.members.push_back(mesh::Member{m.id, m.mesh_addr.empty() ? "-" : m.mesh_addr, m.raft_addr,
                                            m.role == "voter"});
  }
  return accepted;
}

// Runs the in-flight change one step further; `result` is the previous
// step's raft status (0 at the first step).
void ClusterEngine::Loop::advance(int result) {
  ChangeOp& op = *change;
  const int step = op.step++;
  if (result != 0) {
    fail_change(op, op.kind == ChangeOp::Kind::join ? "join_failed" : "failed",
                "membership change for " + (op.kind == ChangeOp::Kind::join ? op.join.node_id : op.node_id) +
                    " failed at step " + std::to_string(step) + ": " + raft_strerror(result));
    finish_change();
    return;
  }
  const auto find_server = [this](raft_id id) -> const raft_server* {
    for (unsigned i = 0; i < r.configuration.n; ++i) {
      if (r.configuration.servers[i].id == id) return &r.configuration.servers[i];
    }
    return nullptr;
  };
  if (step == 0 && op.kind == ChangeOp::Kind::join && op.join.mesh_addr.empty()) {
    // No advertised addresses: not a zctl node but an observer (zctl probe,
    // a tool speaking the protocol). It gets a session if it may join,
    // and never a place in the Raft configuration.
    if (!join_allowed(op.join.node_id)) {
      fail_change(op, "not_member", "node " + op.join.node_id + " is not authorised to join");
    } else {
      op.join_done(JoinDecision::accept(accepted_message()));
    }
    finish_change();
    return;
  }
  if (step == 0 && op.kind == ChangeOp::Kind::join && raft_running && !removed &&
      !(raft_state(&r) == RAFT_LEADER)) {
    // A voter opening a session with a follower: nothing to change, any
    // member may accept it (the leader keeps the records current).
    const raft_server* server = find_server(raft_id_of(op.join.node_id));
    if (server != nullptr && server->role == RAFT_VOTER && op.join.raft_addr == server->address) {
      op.join_done(JoinDecision::accept(accepted_message()));
      finish_change();
      return;
    }
  }
  if (step == 0 && op.kind != ChangeOp::Kind::record && refuse_unless_leader(op)) {
    finish_change();
    return;
  }
  auto fail_rv = [&](int rv, const std::string& what) {
    fail_change(op, op.kind == ChangeOp::Kind::join ? "join_failed" : "failed", what + ": " + raft_error(&r, rv));
    finish_change();
  };

  switch (op.kind) {
    case ChangeOp::Kind::record: {
      if (step == 0) {
        if (!raft_running || raft_state(&r) != RAFT_LEADER || !submit_entry(op, ClusterState::encode_member(op.record))) {
          finish_change();
        }
        return;
      }
      finish_change();
      return;
    }
    case ChangeOp::Kind::authorize: {
      const bool known = state.member(op.node_id) != nullptr || state.allowed().count(op.node_id) != 0;
      if (step == 0 && !known) {
        if (!submit_entry(op, ClusterState::encode_allow(op.node_id))) fail_rv(RAFT_NOMEM, "cannot append");
        return;
      }
      log_info("cluster: node " + op.node_id + " may join");
      ClusterReply reply;
      reply.value = op.node_id;
      reply.index = r.last_applied;
      op.done(std::move(reply));
      finish_change();
      return;
    }
    case ChangeOp::Kind::remove: {
      const raft_id id = raft_id_of(op.node_id);
      if (step == 0) {
        if (op.node_id == settings.node_id) {
          op.done(reply_of(ClusterReply::Code::invalid,
                           "this node leads the cluster; transfer leadership first (zctl cluster transfer-leadership), "
                           "then remove it through the new leader"));
          finish_change();
          return;
        }
        if (find_server(id) == nullptr) {
          op.done(reply_of(ClusterReply::Code::not_member, "node " + op.node_id + " is not a member"));
          finish_change();
          return;
        }
        // Forget first, then a barrier: the node being removed still gets
        // the log up to here (and learns it is removed); the removal itself
        // never reaches it.
        if (!submit_entry(op, ClusterState::encode_forget(op.node_id))) fail_rv(RAFT_NOMEM, "cannot append");
        return;
      }
      if (step == 1) {
        if (!submit_barrier(op)) fail_rv(RAFT_NOMEM, "cannot append a barrier");
        return;
      }
      if (step == 2) {
        op.change_request.data = &op;
        if (int rv = raft_remove(&r, &op.change_request, id, [](struct raft_change* req, int status) {
              static_cast<ChangeOp*>(req->data)->loop->advance(status);
            });
            rv != 0) {
          fail_rv(rv, "cannot remove " + op.node_id);
        }
        return;
      }
      membership_changes.inc();
      log_info("cluster: removed node " + op.node_id);
      ClusterReply reply;
      reply.value = op.node_id;
      reply.index = std::max(r.configuration_index, r.configuration_uncommitted_index);
      op.done(std::move(reply));
      finish_change();
      return;
    }
    case ChangeOp::Kind::join: {
      const JoinRequest& join = op.join;
      const raft_id id = raft_id_of(join.node_id);
      const raft_server* server = find_server(id);
      if (step == 0) {
        if (server != nullptr && server->address != join.raft_addr) {
          fail_change(op, "raft_address_changed",
                      "node " + join.node_id + " is a member with raft address " + server->address + ", not " +
                          join.raft_addr + "; remove it first (zctl cluster remove " + join.node_id + ")");
          finish_change();
          return;
        }
        if (server == nullptr) {
          if (!join_allowed(join.node_id)) {
            fail_change(op, "not_member",
                        "node " + join.node_id +
                            " is not authorised to join; add it first (zctl cluster add " + join.node_id + ")");
            finish_change();
            return;
          }
        }
        MemberRecord record{join.node_id, id, join.raft_addr, join.mesh_addr == "-" ? "" : join.mesh_addr,
                            join.admin_addr == "-" ? "" : join.admin_addr};
        const MemberRecord* known = state.member(join.node_id);
        if (known == nullptr || !(*known == record)) {
          if (!submit_entry(op, ClusterState::encode_member(record))) fail_rv(RAFT_NOMEM, "cannot append");
          return;
        }
        op.step = 1;  // the record is current: on to the configuration
        advance(0);
        return;
      }
      if (step == 1) {
        if (server == nullptr) {
          log_info("cluster: adding node " + join.node_id + " (raft " + join.raft_addr + ")");
          op.configuration_changed = true;
          op.change_request.data = &op;
          if (int rv = raft_add(&r, &op.change_request, id, join.raft_addr.c_str(), [](struct raft_change* req, int s) {
                static_cast<ChangeOp*>(req->data)->loop->advance(s);
              });
              rv != 0) {
            fail_rv(rv, "cannot add " + join.node_id);
          }
          return;
        }
        op.step = 2;
        advance(0);
        return;
      }
      if (step == 2) {
        if (server != nullptr && server->role != RAFT_VOTER) {
          // raft catches the new server up before the promotion commits.
          op.configuration_changed = true;
          op.change_request.data = &op;
          if (int rv = raft_assign(&r, &op.change_request, id, RAFT_VOTER, [](struct raft_change* req, int s) {
                static_cast<ChangeOp*>(req->data)->loop->advance(s);
              });
              rv != 0) {
            fail_rv(rv, "cannot promote " + join.node_id);
          }
          return;
        }
        op.step = 3;
        advance(0);
        return;
      }
      if (op.configuration_changed) membership_changes.inc();
      op.join_done(JoinDecision::accept(accepted_message()));
      finish_change();
      return;
    }
  }
}

// cluster.allowed_nodes and the ids pre-authorised with `zctl cluster add`:
// when both are empty, any node with the token may join.
bool ClusterEngine::Loop::join_allowed(const std::string& node_id) const {
  const auto& configured = settings.allowed_nodes;
  if (configured.empty() && state.allowed().empty()) return true;
  return std::find(configured.begin(), configured.end(), node_id) != configured.end() ||
         state.allowed().count(node_id) != 0 || state.member(node_id) != nullptr;
}

void ClusterEngine::Loop::finish_change() {
  change.reset();
  check_members();
  publish_status();
  next_change();
}

void ClusterEngine::Loop::start_transfer(std::string node_id, ReplyCallback done) {
  ChangeOp probe;
  probe.kind = ChangeOp::Kind::authorize;
  probe.done = done;
  if (refuse_unless_leader(probe)) return;
  raft_id target = 0;
  if (!node_id.empty()) {
    target = raft_id_of(node_id);
    if (node_id == settings.node_id) {
      ClusterReply reply;
      reply.value = node_id;
      done(std::move(reply));  // already leads
      return;
    }
  }
  transfer_waiters.push_back(std::move(done));
  if (transfer_in_flight) return;
  transfer_request.data = this;
  transfer_target = node_id;
  if (int rv = raft_transfer(&r, &transfer_request, target, [](struct raft_transfer* req) {
        Loop& self = *static_cast<Loop*>(req->data);
        self.transfer_in_flight = false;
        raft_id leader = 0;
        const char* address = nullptr;
        raft_leader(&self.r, &leader, &address);
        ClusterReply reply;
        if (leader != 0 && leader != self.self_id) {
          const MemberRecord* record = self.state.member_by_raft_id(leader);
          reply.value = record != nullptr ? record->node_id : std::to_string(leader);
          log_info("cluster: leadership transferred to " + reply.value);
        } else {
          reply = reply_of(ClusterReply::Code::failed, "no other voter took over within the election timeout");
        }
        auto waiters = std::move(self.transfer_waiters);
        self.transfer_waiters.clear();
        for (auto& w : waiters) w(reply);
        if (self.stopping) self.close_raft_when_idle();
      });
      rv != 0) {
    auto waiters = std::move(transfer_waiters);
    transfer_waiters.clear();
    const auto code = rv == RAFT_BADID || rv == RAFT_NOTFOUND ? ClusterReply::Code::invalid : ClusterReply::Code::failed;
    for (auto& w : waiters) {
      w(reply_of(code, rv == RAFT_NOTFOUND ? "there is no other voter to hand leadership to"
                                           : "cannot transfer leadership" +
                                                 (node_id.empty() ? std::string() : " to " + node_id) + ": " +
                                                 raft_error(&r, rv)));
    }
    return;
  }
  transfer_in_flight = true;
}

// ---- removal and shutdown -------------------------------------------------------

void ClusterEngine::Loop::on_removed() {
  removed = true;
  log_error("cluster: this node was removed from the cluster; it stops taking part in elections "
            "(wipe its data dir and join again to return)");
  bus.emit("cluster", "members.changed",
           EventFields().add_raw("peers", "[]").add("index", static_cast<uint64_t>(std::max(r.configuration_index, r.configuration_uncommitted_index))));
  close_raft_when_idle();
}

void ClusterEngine::Loop::begin_stop() {
  if (stopping) return;
  stopping = true;
  {
    std::lock_guard lock(posted_mutex);
    accepting_posts = false;
  }
  drain_posted(false);
  uv_timer_stop(&tick_timer);
  uv_timer_stop(&due_timer);
  if (!raft_initialised || !raft_running) {
    if (raft_initialised && !removed) return;  // raft is closing already; its callback closes the handles
    close_handles();
    return;
  }
  // A leader hands over first: a near-instant election elsewhere instead
  // of a full election timeout without a leader.
  if (raft_state(&r) == RAFT_LEADER && voter_count(r.configuration) > 1 && !transfer_in_flight) {
    transfer_request.data = this;
    if (raft_transfer(&r, &transfer_request, 0, [](struct raft_transfer* req) {
          Loop& self = *static_cast<Loop*>(req->data);
          self.transfer_in_flight = false;
          self.close_raft_when_idle();
        }) == 0) {
      transfer_in_flight = true;
      log_info("cluster: handing leadership over before stopping");
      return;
    }
  }
  if (transfer_in_flight) return;  // its callback continues the close
  close_raft_when_idle();
}

// raft 0.15 can crash when it is closed while an entry it appended is still
// being written (the write completes into freed state), so the close waits
// for our entries in flight first, for at most 2 s.
void ClusterEngine::Loop::close_raft_when_idle() {
  if (!raft_running) return;
  if ((!validator.idle() || change) && close_waits++ < kCloseWaitRounds) {
    uv_timer_start(&close_timer, [](uv_timer_t* t) { static_cast<Loop*>(t->data)->close_raft_when_idle(); }, 5, 0);
    return;
  }
  raft_running = false;
  publish_status();
  close_raft();
}

// raft 0.15's raft_uv can report its close twice: a storage or transport
// callback that completes after the close has fired re-checks and fires it
// again. raft's callback frees raft's state, so a second call double-frees
// (a node stopped right after start aborted with "double free", once in 200
// starts under load). raft_io has no user pointer of its own; raft's
// io->data is the raft, whose data is this loop.
void ClusterEngine::Loop::close_io_once(raft_io* io, raft_io_close_cb cb) {
  Loop& self = *static_cast<Loop*>(static_cast<raft*>(io->data)->data);
  self.raft_io_closed_cb = cb;
  self.uv_close_io(io, [](raft_io* closed) {
    Loop& loop = *static_cast<Loop*>(static_cast<raft*>(closed->data)->data);
    if (loop.raft_io_close_fired) return;
    loop.raft_io_close_fired = true;
    loop.raft_io_closed_cb(closed);
  });
}

// raft first, then its I/O and transport, then our handles: the loop ends
// when the last handle is closed.
void ClusterEngine::Loop::close_raft() {
  raft_close(&r, [](raft* closed) {
    Loop& self = *static_cast<Loop*>(closed->data);
    // raft_uv and the transport are freed only once the loop has ended
    // (run()), not here: raft_uv may still call back into its memory (see
    // close_io_once()); freeing it here crashed a node stopped right after
    // start (once in 150 starts under load).
    // Whatever was still queued can no longer happen.
    if (self.change) {
      self.fail_change(*self.change, "shutting_down", "raft closed before the change completed");
      self.change.reset();
    }
    for (auto& op : self.changes_waiting) self.fail_change(*op, "shutting_down", "raft closed");
    self.changes_waiting.clear();
    if (self.stopping) self.close_handles();
  });
}

void ClusterEngine::Loop::close_handles() {
  for (auto* handle : {reinterpret_cast<uv_handle_t*>(&work_async), reinterpret_cast<uv_handle_t*>(&tick_timer),
                       reinterpret_cast<uv_handle_t*>(&due_timer), reinterpret_cast<uv_handle_t*>(&close_timer),
                       reinterpret_cast<uv_handle_t*>(&change_check)}) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
  }
}

// ---- the public face ------------------------------------------------------------

ClusterEngine::ClusterEngine(ClusterSettings settings, EventBus& bus, MetricsRegistry& metrics,
                             AnnouncementListener on_announcement, MembersListener on_members)
    : loop_(std::make_unique<Loop>(std::move(settings), bus, metrics, std::move(on_announcement),
                                   std::move(on_members))) {}

ClusterEngine::~ClusterEngine() { stop(); }

void ClusterEngine::advertise(std::string mesh_address, std::string admin_address) {
  loop_->settings.mesh_address = std::move(mesh_address);
  loop_->settings.admin_address = std::move(admin_address);
}

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
  {
    std::lock_guard lock(l.posted_mutex);
    if (l.accepting_posts) {
      l.posted.push_back([&l](bool) { l.begin_stop(); });
      uv_async_send(&l.work_async);
    }
  }
  l.thread.join();
}

ClusterStatus ClusterEngine::status() const {
  std::lock_guard lock(loop_->status_mutex);
  return loop_->view.status;
}

ClusterView ClusterEngine::view() const {
  std::lock_guard lock(loop_->status_mutex);
  return loop_->view;
}

void ClusterEngine::join(JoinRequest request, MembershipAuthority::DecisionCallback done) {
  Loop& l = *loop_;
  l.post([&l, request = std::move(request), done = std::move(done)](bool running) mutable {
    if (!running) {
      done(JoinDecision::reject("shutting_down", "the node is stopping"));
      return;
    }
    auto op = std::make_unique<ChangeOp>();
    op->kind = ChangeOp::Kind::join;
    op->join = std::move(request);
    op->join_done = std::move(done);
    l.enqueue(std::move(op));
  });
}

namespace {
template <typename Enqueue>
void post_request(ClusterEngine::Loop& l, ClusterEngine::ReplyCallback done, Enqueue enqueue) {
  l.post([done = std::move(done), enqueue = std::move(enqueue)](bool running) mutable {
    if (!running) {
      done(reply_of(ClusterReply::Code::failed, "the node is stopping"));
      return;
    }
    enqueue(std::move(done));
  });
}
}  // namespace

void ClusterEngine::authorize(std::string node_id, ReplyCallback done) {
  Loop& l = *loop_;
  post_request(l, std::move(done), [&l, node_id = std::move(node_id)](ReplyCallback d) mutable {
    auto op = std::make_unique<ChangeOp>();
    op->kind = ChangeOp::Kind::authorize;
    op->node_id = std::move(node_id);
    op->done = std::move(d);
    l.enqueue(std::move(op));
  });
}

void ClusterEngine::remove(std::string node_id, ReplyCallback done) {
  Loop& l = *loop_;
  post_request(l, std::move(done), [&l, node_id = std::move(node_id)](ReplyCallback d) mutable {
    auto op = std::make_unique<ChangeOp>();
    op->kind = ChangeOp::Kind::remove;
    op->node_id = std::move(node_id);
    op->done = std::move(d);
    l.enqueue(std::move(op));
  });
}

void ClusterEngine::open_announcements() {
  Loop& l = *loop_;
  l.post([&l](bool running) {
    if (!running) return;
    l.announcements_open = true;
    for (const auto& a : std::exchange(l.held_announcements, {})) l.announce(a);
  });
}

void ClusterEngine::peer_lost(std::string node_id) {
  Loop& l = *loop_;
  l.post([&l, node_id = std::move(node_id)](bool running) {
    if (running) l.peer_lost(node_id);
  });
}

void ClusterEngine::transfer_leadership(std::string node_id, ReplyCallback done) {
  Loop& l = *loop_;
  post_request(l, std::move(done), [&l, node_id = std::move(node_id)](ReplyCallback d) mutable {
    l.start_transfer(std::move(node_id), std::move(d));
  });
}

}  // namespace zctl
