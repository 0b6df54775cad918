// The composition root of a node.
//
// start() builds the services in order -- data dir and its lock, sequence
// store, journal, metrics, event bus, sink host, admin API, mesh port -- and
// announces node/started; shutdown runs in reverse: mesh port closes,
// node/stopping, admin API (after watch streams got the last event), sinks
// drain, sequence store closes.
//
// Threads: run() blocks the calling thread, which becomes the admin/control
// thread; the mesh port, sink workers, the sink supervisor and SIGHUP
// reloads have their own.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "zctl/core/config.hpp"

namespace zctl {

// Why a node could not start, and the process exit code that says so
// (1: configuration/plugin problem, 4: runtime problem such as a port in use).
class StartupError : public std::runtime_error {
 public:
  StartupError(int exit_code, const std::string& message) : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

struct EngineInfo {
  std::string node_id;
  std::string data_dir;
  std::string admin_url;  // "http://127.0.0.1:6280"
  std::string mesh_address;  // "127.0.0.1:6262"
  std::vector<std::string> sinks;  // "events (file)"
  std::vector<std::string> plugin_path;
  uint64_t first_seq = 0;
  bool seq_recovered_from_crash = false;
};

class Engine {
 public:
  // Re-reads the configuration on SIGHUP; returns errors (formatted) or fills `out`.
  using ConfigReloader = std::function<std::vector<std::string>(Config& out)>;

  Engine(Config config, ConfigReloader reloader);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void start();  // throws StartupError; on failure nothing is left running
  const EngineInfo& info() const;

  // Serves until SIGINT/SIGTERM; SIGHUP reloads sinks.
  void run();

 private:
  struct Services;
  std::unique_ptr<Services> services_;
};

}  // namespace zctl
