#include "zctl/core/engine.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <utility>

#include "admin_server.hpp"
#include "cluster_engine.hpp"
#include "descriptor_budget.hpp"
#include "membership.hpp"
#include "mesh_dialer.hpp"
#include "mesh_server.hpp"
#include "peer_sessions.hpp"
#include "service_notify.hpp"
#include "tls_context.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/seq_store.hpp"
#include "zctl/core/sink_host.hpp"

namespace zctl {

namespace asio = boost::asio;

namespace {

constexpr int kExitConfig = 1;
constexpr int kExitRuntime = 4;
constexpr auto kSinkDrainDeadline = std::chrono::seconds(5);
// Lets watch streams write node/stopping before the admin API closes them.
constexpr auto kStreamFlushGrace = std::chrono::milliseconds(100);

// Holds an exclusive flock on <data_dir>/lock for the node's lifetime, so two
// nodes never share a data dir (and its sequence numbers).
class DataDirLock {
 public:
  explicit DataDirLock(const std::string& data_dir) {
    const std::string path = data_dir + "/lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw StartupError(kExitRuntime, "data dir " + data_dir + " is not writable: cannot create " + path + ": " +
                                           std::strerror(errno));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char pid[32] = {};
      const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
      ::close(fd_);
      throw StartupError(kExitRuntime, "data dir " + data_dir + " is in use by another zctl node" +
                                           (n > 0 ? std::string(" (pid ") + pid + ")" : std::string()));
    }
    const std::string me = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
      log_warn("cannot record pid in " + path + ": " + std::strerror(errno));
    }
  }
  ~DataDirLock() { ::close(fd_); }
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int fd_ = -1;
};

// Registries still used by sink workers abandoned inside a hung plugin:
// kept until the process exits, reachable (so leak checkers see them as
// kept on purpose), and never destroyed under those threads.
std::vector<std::unique_ptr<MetricsRegistry>>& registries_kept_for_abandoned_workers() {
  static auto* kept = new std::vector<std::unique_ptr<MetricsRegistry>>();
  return *kept;
}

// `key` names the setting in errors, e.g. "admin.token_file".
std::string read_token_file(std::string_view key, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw StartupError(kExitConfig, std::string(key) + " " + path + ": " + std::strerror(errno));
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) throw StartupError(kExitConfig, std::string(key) + " " + path + " is empty");
  return token;
}

// A wildcard listen address (0.0.0.0:6262, [::]:6262) cannot be dialled by
// other nodes: they are told the raft address's host (which must be
// reachable) with the bound port.
std::string advertisable(const std::string& bound, const std::string& raft_address) {
  const size_t colon = bound.rfind(':');
  const std::string host = bound.substr(0, colon);
  if (host != "0.0.0.0" && host != "[::]") return bound;
  return raft_address.substr(0, raft_address.rfind(':')) + bound.substr(colon);
}

}  // namespace

struct Engine::Services {
  Config config;
  ConfigReloader reloader;
  EngineInfo info;

  asio::io_context io{1};
  std::optional<asio::signal_set> signals;
  std::optional<asio::steady_timer> shutdown_timer;
  bool stopping = false;

  // Declared in start order; torn down explicitly in reverse by shutdown().
  std::unique_ptr<DataDirLock> data_dir_lock;
  std::unique_ptr<SeqStore> seq;
  std::unique_ptr<Journal> journal;
  // Heap-held so that a sink worker abandoned inside a hung plugin (which
  // still updates its metrics) can be left a live registry at exit.
  std::unique_ptr<MetricsRegistry> metrics = std::make_unique<MetricsRegistry>();
  std::unique_ptr<EventBus> bus;
  std::unique_ptr<PluginHost> plugins;
  std::unique_ptr<SinkHost> sinks;
  std::unique_ptr<AdminServer> admin;
  std::unique_ptr<PeerSessions> peers;
  std::unique_ptr<MeshDialer> dialer;
  std::unique_ptr<ClusterEngine> cluster;
  bool ready_notified = false;  // io thread
  std::unique_ptr<MembershipAuthority> membership;
  std::unique_ptr<MeshServer> mesh;
  bool sinks_attached = false;
  bool admin_attached = false;
  std::string advertised_mesh;   // set before the cluster starts, then read-only
  std::string advertised_admin;

  void start();
  void start_cluster_and_mesh();
  void notify_ready_once();
  void stop_mesh();
  void begin_shutdown(std::string_view reason);
  void finish_shutdown();
  void reload();
  void wait_for_signals();
  void start_reload();  // io thread

  // SIGHUP reloads run here, off the io thread, so loading or stopping
  // sinks never stalls the admin API; one at a time, a second request
  // queued while one runs.
  std::thread reload_thread;
  bool reload_running = false;  // io thread only
  bool reload_queued = false;   // io thread only
};

namespace {

void reserve_descriptor_table(uint32_t max_pending) {
  const DescriptorReservation r = reserve_descriptors(max_pending);
  const std::string need_text = "mesh.max_pending " + std::to_string(max_pending) + " + " +
                                std::to_string(kDescriptorHeadroom) + " for sessions, clients, raft and sinks";
  if (!r.limit.error.empty()) log_warn("descriptors: " + r.limit.error);
  if (!r.table_error.empty()) {
    log_warn("descriptors: " + r.table_error + "; the kernel grows the table as descriptors open");
  }
  if (r.limit.soft != r.limit.soft_before) {
    log_info("descriptors: soft RLIMIT_NOFILE raised from " + std::to_string(r.limit.soft_before) + " to " +
             std::to_string(r.limit.soft) + " for " + need_text);
  }
  if (r.plan.short_of_wanted()) {
    log_warn("descriptors: RLIMIT_NOFILE (soft " + std::to_string(r.limit.soft) + ", hard " +
             std::to_string(r.limit.hard) + ") is below " + need_text +
             "; accept() fails with EMFILE once pending connections and the node's other descriptors (tens when "
             "idle) reach " + std::to_string(r.limit.soft) +
             " (controller_mesh_accept_errors_total{reason=\"EMFILE\"}); raise the hard limit (LimitNOFILE= in "
             "the service unit) or lower mesh.max_pending");
  }
  if (r.table_error.empty() && r.limit.read) {
    log_debug("descriptors: table of " + std::to_string(r.plan.slots_to_reserve) + " slots reserved for " + need_text);
  }
}

}  // namespace

void Engine::Services::start() {
  // A peer that went away must be an error on the write (libuv, under raft,
  // writes with write(2)), not SIGPIPE ending the node.
  std::signal(SIGPIPE, SIG_IGN);
  // First, while the node has opened little and started no thread of its own.
  reserve_descriptor_table(config.mesh.max_pending);
  std::error_code ec;
  std::filesystem::create_directories(config.node.data_dir, ec);
  if (ec) {
    throw StartupError(kExitRuntime, "cannot create data dir " + config.node.data_dir + ": " + ec.message());
  }
  data_dir_lock = std::make_unique<DataDirLock>(config.node.data_dir);
  try {
    seq = std::make_unique<SeqStore>(config.node.data_dir + "/seq");
  } catch (const std::exception& e) {
    throw StartupError(kExitRuntime, e.what());
  }
  if (seq->recovered_from_crash()) {
    log_warn("previous run did not stop cleanly; event seq continues at " + std::to_string(seq->last() + 1) +
             " (numbers reserved by the previous run are skipped, never reused)");
  }
  journal = std::make_unique<Journal>(config.events.journal_size);
  metrics->gauge("controller_build_info", "Build information; always 1.", {"version"}).with({ZCTL_VERSION}).set(1);
  bus = std::make_unique<EventBus>(config.node.id, *seq, *journal, *metrics);

  plugins = std::make_unique<PluginHost>(config.plugins.path);
  sinks = std::make_unique<SinkHost>(*plugins, *metrics, *bus);
  try {
    sinks->start(config.sinks);
  } catch (const SinkSetupError& e) {
    throw StartupError(kExitConfig, e.what());
  }
  bus->attach(sinks.get());
  sinks_attached = true;

  const std::string token = config.admin.token_file.empty() ? std::string() : read_token_file("admin.token_file", config.admin.token_file);
  admin = std::make_unique<AdminServer>(
      io, *journal, *metrics, *sinks,
      [this] {
        const ClusterStatus c = cluster ? cluster->status() : ClusterStatus{};
        if (c.has_leader) return Readiness{true, "leader " + c.leader_id + " (term " + std::to_string(c.term) + ")"};
        return Readiness{false, c.state_known ? "no validated leader (term " + std::to_string(c.term) + ")"
                                              : "cluster state not known yet"};
      },
      token);
  try {
    admin->listen(config.admin.listen, config.admin.tls);
  } catch (const TlsSetupError& e) {
    throw StartupError(kExitConfig, e.what());
  } catch (const std::exception& e) {
    throw StartupError(kExitRuntime, e.what());
  }
  bus->attach(admin.get());
  admin_attached = true;

  start_cluster_and_mesh();

  info.node_id = config.node.id;
  info.data_dir = config.node.data_dir;
  info.admin_url = admin->url();
  info.mesh_address = mesh->local_address();
  for (const auto& s : config.sinks) info.sinks.push_back(s.name + " (" + s.plugin + ")");
  info.plugin_path = config.plugins.path;
  info.seq_recovered_from_crash = seq->recovered_from_crash();

  const EventPtr started = bus->emit("node", "started",
                                     EventFields()
                                         .add("version", ZCTL_VERSION)
                                         .add("pid", static_cast<int64_t>(::getpid()))
                                         .add("admin", admin->local_address())
                                         .add("mesh", mesh->local_address())
                                         .add("dataDir", config.node.data_dir));
  info.first_seq = started->seq;
  cluster->open_announcements();
  // Handlers exist before READY=1, so a SIGHUP or SIGTERM right after it is
  // handled, not fatal.
  signals.emplace(io, SIGINT, SIGTERM, SIGHUP);
  wait_for_signals();
  // READY=1 once the first leader state is known (see start_cluster()).
  if (cluster->status().state_known) notify_ready_once();
}

void Engine::Services::notify_ready_once() {
  if (ready_notified || stopping) return;
  ready_notified = true;
  const ClusterStatus c = cluster->status();
  notify_ready("serving: mesh " + mesh->local_address() + ", admin API " + admin->local_address() + ", " +
               std::to_string(config.sinks.size()) + " sink(s), " +
               (c.has_leader ? "leader " + c.leader_id : std::string("no leader")));
}

// The mesh port is bound first (its address goes into this node's member
// record), then raft starts, then the mesh accepts peers and the dialer
// reaches out: to the --join seeds, and to every member whose id sorts
// after this node's (the other side of each pair dials the other way, so
// each pair of members keeps one session).
void Engine::Services::start_cluster_and_mesh() {
  const bool joining = !config.cluster.join.empty();  // the config check refuses join with bootstrap
  std::string join_token;
  if (!config.mesh.join_token_file.empty()) {
    join_token = read_token_file("mesh.join_token_file", config.mesh.join_token_file);
  } else if (!config.mesh.tls.enabled()) {
    log_warn("mesh: no join_token_file and no TLS: any node that names cluster '" + config.cluster.id +
             "' may join; set mesh.join_token_file");
  }
  peers = std::make_unique<PeerSessions>(*bus, [this](const std::string& node_id) {
    if (cluster) cluster->peer_lost(node_id);  // any thread; the engine queues it
  });

  MeshDialerSettings dial;
  dial.node_id = config.node.id;
  dial.cluster_id = config.cluster.id;
  dial.join_token = join_token;
  dial.raft_addr = config.cluster.raft_listen;
  dial.tls = config.mesh.tls;
  dial.session_timeout = config.cluster.election_timeout;
  dial.connect_timeout = config.cluster.election_timeout;
  dial.handshake_timeout = config.mesh.stray.grace_period;

  ClusterSettings settings;
  settings.node_id = config.node.id;
  settings.raft_address = config.cluster.raft_listen;
  settings.data_dir = config.node.data_dir + "/raft";
  settings.bootstrap = !joining;
  settings.allowed_nodes = config.cluster.allowed_nodes;
  settings.election_timeout = config.cluster.election_timeout;
  settings.heartbeat = config.cluster.heartbeat;
  settings.leader_stability = config.cluster.leader_stability;
  settings.session_up = [this](const std::string& node_id) { return peers->is_up(node_id); };
  cluster = std::make_unique<ClusterEngine>(
      std::move(settings), *bus, *metrics,
      [this] { asio::post(io, [this] { notify_ready_once(); }); },  // from the raft loop thread
      [this](const std::vector<ClusterMemberView>& members) {
        // A node restarted on new addresses dials every member until the
        // leader has recorded them (a join carries them).
        const auto self = std::find_if(members.begin(), members.end(),
                                       [this](const ClusterMemberView& m) { return m.id == config.node.id; });
        const bool outdated = self != members.end() &&
                              (self->mesh_addr != advertised_mesh || self->admin_addr != advertised_admin);
        std::map<std::string, std::string> targets;
        for (const auto& m : members) {
          if ((m.id > config.node.id || (outdated && m.id != config.node.id)) && !m.mesh_addr.empty()) {
            targets[m.id] = m.mesh_addr;
          }
        }
        dialer->set_targets(std::move(targets));
      });

  admin->attach_cluster(*cluster, [this](const std::string& node_id) { return peers->is_up(node_id); });

  MeshServerSettings mesh_settings;
  mesh_settings.mesh = config.mesh;
  mesh_settings.node_id = config.node.id;
  mesh_settings.cluster_id = config.cluster.id;
  mesh_settings.join_token = join_token;
  mesh_settings.session_timeout = config.cluster.election_timeout;
  mesh_settings.heartbeat = config.cluster.heartbeat;
  membership = std::make_unique<RaftMembership>(*cluster, *peers);
  mesh = std::make_unique<MeshServer>(std::move(mesh_settings), *bus, *metrics, *membership);
  try {
    mesh->listen();
  } catch (const TlsSetupError& e) {
    throw StartupError(kExitConfig, e.what());
  } catch (const std::exception& e) {
    throw StartupError(kExitRuntime, e.what());
  }
  advertised_mesh = advertisable(mesh->local_address(), config.cluster.raft_listen);
  advertised_admin = advertisable(admin->local_address(), config.cluster.raft_listen);
  dial.mesh_addr = advertised_mesh;
  dial.admin_addr = advertised_admin;
  dialer = std::make_unique<MeshDialer>(std::move(dial), *peers);
  cluster->advertise(advertised_mesh, advertised_admin);
  try {
    cluster->start();
  } catch (const std::exception& e) {
    throw StartupError(kExitRuntime, std::string("cluster: ") + e.what());
  }
  mesh->start();
  try {
    dialer->start();
  } catch (const TlsSetupError& e) {
    throw StartupError(kExitConfig, e.what());
  } catch (const std::exception& e) {
    throw StartupError(kExitRuntime, e.what());
  }
  if (joining) dialer->join_through(config.cluster.join);
}

// Stops accepting and closes every mesh connection; idempotent.
void Engine::Services::stop_mesh() {
  if (dialer) dialer->stop();
  if (mesh) mesh->stop();
}

void Engine::Services::wait_for_signals() {
  signals->async_wait([this](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    if (signal == SIGHUP) {
      start_reload();
      wait_for_signals();
      return;
    }
    const char* name = signal == SIGINT ? "SIGINT" : "SIGTERM";
    log_info(std::string("received ") + name + ", stopping");
    begin_shutdown(name);
  });
}

void Engine::Services::start_reload() {
  if (stopping) return;
  if (reload_running) {
    reload_queued = true;
    return;
  }
  if (reload_thread.joinable()) reload_thread.join();  // the previous one has finished
  reload_running = true;
  reload_thread = std::thread([this] {
    try {
      reload();
    } catch (const std::exception& e) {
      log_error(std::string("reload failed: ") + e.what());
    }
    asio::post(io, [this] {
      reload_running = false;
      if (std::exchange(reload_queued, false)) start_reload();
    });
  });
}

void Engine::Services::reload() {
  notify_reloading();
  Config next = config;
  if (reloader) {
    const auto errors = reloader(next);
    if (!errors.empty()) {
      for (const auto& e : errors) log_error("reload: " + e);
      log_error("reload: configuration invalid; keeping the running configuration (sinks reopened)");
      next = config;
    }
  }
  const auto errors = sinks->reload(next.sinks);
  for (const auto& e : errors) log_error("reload: " + e);
  config.sinks = next.sinks;
  log_info("reloaded sinks (" + std::to_string(next.sinks.size()) + " configured" +
           (errors.empty() ? ")" : ", " + std::to_string(errors.size()) + " kept their previous configuration)"));
  notify_ready("serving: reloaded, " + std::to_string(next.sinks.size()) + " sink(s)");
}

void Engine::Services::begin_shutdown(std::string_view reason) {
  if (stopping) return;
  stopping = true;
  notify_stopping();
  if (signals) signals->cancel();
  // Raft first: a leader hands over while its mesh sessions still prove it
  // to the others; then the mesh, so no peer traffic arrives during the drain.
  if (cluster) cluster->stop();
  stop_mesh();
  bus->emit("node", "stopping", EventFields().add("reason", reason));
  shutdown_timer.emplace(io, kStreamFlushGrace);
  shutdown_timer->async_wait([this](const boost::system::error_code&) {
    bus->detach(admin.get());
    admin_attached = false;
    admin->stop();
  });
}

void Engine::Services::finish_shutdown() {
  if (reload_thread.joinable()) reload_thread.join();
  signals.reset();
  if (cluster) cluster->stop();
  stop_mesh();
  if (admin_attached) {
    bus->detach(admin.get());
    admin_attached = false;
  }
  if (admin) {
    admin->stop();
    // Let the closed sessions' handlers finish while the server they refer
    // to is alive (run() may have ended by an exception, not by running out).
    io.restart();
    while (io.poll() > 0) {
    }
  }
  if (sinks_attached) {
    bus->detach(sinks.get());
    sinks_attached = false;
  }
  if (sinks && !sinks->stop(kSinkDrainDeadline) && metrics) {
    // An abandoned worker thread still holds pointers into the registry.
    log_error("leaving the metrics registry to the abandoned sink worker(s) until exit");
    registries_kept_for_abandoned_workers().push_back(std::move(metrics));
  }
  if (seq) {
    try {
      seq->close();
    } catch (const std::exception& e) {
      log_error(std::string("cannot record a clean stop: ") + e.what());
    }
  }
}

Engine::Engine(Config config, ConfigReloader reloader) : services_(std::make_unique<Services>()) {
  services_->config = std::move(config);
  services_->reloader = std::move(reloader);
}

Engine::~Engine() {
  services_->finish_shutdown();
}

void Engine::start() {
  try {
    services_->start();
  } catch (...) {
    services_->finish_shutdown();
    throw;
  }
}

const EngineInfo& Engine::info() const { return services_->info; }

void Engine::run() {
  Services& s = *services_;
  s.io.run();
  s.finish_shutdown();
}

}  // namespace zctl
