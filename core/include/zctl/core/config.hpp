// Typed configuration of a node: plain data, no library types.
//
// Flow: YAML text -> parse_config() -> Config (every error with line:column)
// -> CLI flags override fields -> resolve_defaults() -> each service gets its
// own struct. A sink's own `config:` subtree stays opaque to core and reaches
// the plugin as a JSON string (SinkConfig::config_json).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/log.hpp"

namespace zctl {

using Duration = std::chrono::milliseconds;

struct TlsConfig {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  bool require_client_cert = true;
  bool enabled() const { return !cert_file.empty(); }
};

enum class StrayAction { none, log, disconnect };

struct StrayConfig {
  Duration grace_period{std::chrono::seconds(30)};
  StrayAction action = StrayAction::disconnect;
  LogLevel log_level = LogLevel::warn;
};

struct FloodConfig {
  Duration window{std::chrono::seconds(10)};
  uint32_t max_connections_per_source = 100;
};

struct NodeConfig {
  std::string id;        // empty until resolve_defaults(): then the short host name
  std::string data_dir;  // empty until resolve_defaults(): ./zctl-data/<id>
};

struct MeshConfig {
  std::string listen = "127.0.0.1:6262";
  uint32_t max_frame_bytes = 65536;
  uint32_t max_pending = 10000;
  uint32_t max_pending_per_source = 64;
  TlsConfig tls;
  std::string join_token_file;
  StrayConfig stray;
  FloodConfig flood;
};

struct ClusterConfig {
  std::string id = "zctl";  // the cluster's name; a node only admits peers that name the same one
  // Node ids allowed to join through the mesh; empty: any node that
  // presents the join token.
  std::vector<std::string> allowed_nodes;
  std::string raft_listen = "127.0.0.1:6263";
  bool bootstrap = false;
  std::vector<std::string> join;
  Duration election_timeout{std::chrono::seconds(1)};
  Duration heartbeat{std::chrono::milliseconds(100)};
  Duration leader_stability{std::chrono::milliseconds(300)};
};

struct AdminConfig {
  std::string listen = "127.0.0.1:6280";
  std::string token_file;
  TlsConfig tls;
};

struct EventsConfig {
  uint64_t journal_size = 100000;
};

struct PluginsConfig {
  std::vector<std::string> path;  // searched in order; see resolve_defaults()
};

struct SinkFilter {
  std::vector<std::string> namespaces;  // empty = all
  std::vector<std::string> types;       // glob patterns over eventType; empty = all
};

enum class WhenFull { block, drop_newest, drop_oldest };

struct SinkQueueConfig {
  uint64_t max_events = 100000;
  WhenFull when_full = WhenFull::block;
  // `block` back-pressures the emitter at most this long per event; after
  // that the sink is treated as stalled and sheds (counted, announced) until
  // its queue drains below half, so a hung sink cannot stall the node.
  Duration block_timeout{std::chrono::seconds(1)};
  uint32_t batch_max = 1000;
};

struct RetryConfig {
  Duration initial{std::chrono::milliseconds(100)};
  Duration max{std::chrono::seconds(30)};
  uint32_t max_attempts = 0;  // 0 = forever
};

struct SpoolConfig {
  std::string dir;  // empty = no spool
  uint64_t max_bytes = 1ull << 30;
};

// Where a sink writes events it gave up on (rejected, retries exhausted).
struct DeadLetterConfig {
  std::string path;  // empty = none
  uint64_t max_bytes = 100ull << 20;  // then the file moves to <path>.1 and a new one starts
};

struct SinkConfig {
  std::string name;
  std::string plugin;
  SinkFilter filter;
  SinkQueueConfig queue;
  RetryConfig retry;
  SpoolConfig spool;
  DeadLetterConfig dead_letter;
  Duration call_timeout{std::chrono::seconds(10)};  // a plugin call longer than this marks the sink unhealthy
  std::string config_json = "{}";  // the sink's `config:` subtree as JSON
};

struct Config {
  NodeConfig node;
  MeshConfig mesh;
  ClusterConfig cluster;
  AdminConfig admin;
  EventsConfig events;
  PluginsConfig plugins;
  std::vector<SinkConfig> sinks;
  bool sinks_given = false;  // `sinks:` present (an empty list means: no sinks)
};

struct ConfigError {
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based; 0 when unknown
  std::string path;     // dotted key path, e.g. "sinks[0].queue.when_full"
  std::string message;  // e.g. "unknown key 'gracePeriod' (did you mean 'grace_period'?)"
};

// "FILE:LINE:COLUMN: PATH: MESSAGE" (line/column omitted when unknown).
std::string format_config_error(const ConfigError& error, std::string_view source_name);

struct ConfigParseResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<ConfigError> errors;
};

// Parses YAML text. Reports every error it can find, not just the first.
ConfigParseResult parse_config(std::string_view yaml_text);

// Reads and parses a file; an unreadable file is one error with line 0.
ConfigParseResult load_config_file(const std::string& path);

// Fills what depends on other fields: node.id (short host name), node.data_dir
// (./zctl-data/<id>), plugins.path (ZCTL_PLUGIN_PATH entries, then
// <dir of the executable>/../lib/zctl/plugins), and, when `sinks:` was not
// given, the default file sink writing <data_dir>/events.jsonl.
void resolve_defaults(Config& config, const std::string& executable_dir);

// "500ms", "30s", "1m", "2h", "1m30s". Returns nullopt when malformed.
std::optional<Duration> parse_duration(std::string_view text);
// "1024", "64KiB", "100MB", "1GiB". Returns nullopt when malformed.
std::optional<uint64_t> parse_size(std::string_view text);
std::string format_duration(Duration d);

std::string_view to_string(StrayAction action);
std::string_view to_string(WhenFull when_full);

// A node or cluster id: 1 to 64 letters, digits, '_' and '-' (ids travel in
// mesh frames, file names and metric labels).
bool is_node_id(std::string_view id);

// Where an address is used decides what it may be: a listen address needs
// an IP or localhost and may use port 0; a peer address may be any host name
// but needs a port; the raft address (bound, and stored in the log for the
// others to dial) needs an IPv4 address other than 0.0.0.0 and a fixed port.
enum class AddressUse { listen, peer, raft };

// Why `text` is not a usable HOST:PORT for `use`, or nullopt when it is. The
// config reader and the command-line flags share these rules.
std::optional<std::string> address_problem(std::string_view text, AddressUse use);

}  // namespace zctl
