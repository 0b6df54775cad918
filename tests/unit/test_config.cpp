// Tests for the YAML configuration loader (core/src/config.cpp).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/config.hpp"

using namespace std::chrono_literals;
using zctl::ConfigError;

namespace {

std::string describe(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& error : errors) out += zctl::format_config_error(error, "test.yaml") + "\n";
  return out;
}

zctl::Config parsed(std::string_view yaml) {
  auto result = zctl::parse_config(yaml);
  INFO(describe(result.errors));
  REQUIRE(result.errors.empty());
  REQUIRE(result.config.has_value());
  return *result.config;
}

std::vector<ConfigError> errors_of(std::string_view yaml) {
  auto result = zctl::parse_config(yaml);
  CHECK_FALSE(result.config.has_value());
  return result.errors;
}

// The single error `yaml` must produce.
ConfigError only_error(std::string_view yaml) {
  const auto errors = errors_of(yaml);
  INFO(describe(errors));
  REQUIRE(errors.size() == 1);
  return errors[0];
}

// "LINE:COLUMN PATH: MESSAGE", compact enough to compare in one CHECK.
std::string located(const ConfigError& e) {
  return std::to_string(e.line) + ":" + std::to_string(e.column) + " " + e.path + ": " + e.message;
}

std::string sink_config_json(std::string_view config_yaml) {
  const std::string yaml =
      "sinks:\n  - name: s\n    plugin: p\n    config: " + std::string(config_yaml) + "\n";
  const auto config = parsed(yaml);
  REQUIRE(config.sinks.size() == 1);
  return config.sinks[0].config_json;
}

// Sets or unsets an environment variable for one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The examples live in the source tree; the tests run from the build tree.
std::filesystem::path source_file(const std::filesystem::path& relative) {
  namespace fs = std::filesystem;
#ifdef ZCTL_SOURCE_DIR
  return fs::path(ZCTL_SOURCE_DIR) / relative;
#else
  for (fs::path start : {fs::current_path(), fs::absolute(__FILE__).parent_path()}) {
    for (fs::path dir = start; !dir.empty(); dir = dir.parent_path()) {
      if (fs::exists(dir / relative)) return dir / relative;
      if (dir == dir.root_path()) break;
    }
  }
  return relative;
#endif
}

}  // namespace

// ---------------------------------------------------------------------------
// Valid documents

TEST_CASE("an empty or comment-only document is the all-defaults config", "[config]") {
  for (const char* text : {"", "\n", "# nothing here\n# at all\n", "---\n", "---\n...\n"}) {
    INFO("document: '" << text << "'");
    const auto config = parsed(text);
    CHECK(config.mesh.listen == "127.0.0.1:6262");
    CHECK(config.cluster.raft_listen == "127.0.0.1:6263");
    CHECK(config.cluster.id == "zctl");
    CHECK(config.cluster.allowed_nodes.empty());
    CHECK(config.admin.listen == "127.0.0.1:6280");
    CHECK(config.mesh.stray.grace_period == 30s);
    CHECK(config.node.id.empty());
    CHECK(config.sinks.empty());
    CHECK_FALSE(config.sinks_given);
  }
}

TEST_CASE("every key of the spec is read into the structs", "[config]") {
  const auto config = parsed(R"(
node: { id: ctrl1, data_dir: /var/lib/zctl/ctrl1 }
mesh:
  listen: 0.0.0.0:6262
  max_frame_bytes: 64KiB
  max_pending: 500
  max_pending_per_source: 8
  tls: { cert_file: c.pem, key_file: k.pem, ca_file: ca.pem, require_client_cert: false }
  join_token_file: /etc/zctl/join-token
  stray: { grace_period: 1m30s, action: log, log_level: error }
  flood: { window: 5s, max_connections_per_source: 7 }
cluster:
  id: prod-eu
  allowed_nodes: [ ctrl1, ctrl2 ]
  raft_listen: 10.0.0.1:6263
  bootstrap: false
  join: [ 10.0.0.1:6262, ctrl2.example.com:6262 ]
  election_timeout: 2s
  heartbeat: 200ms
  leader_stability: 0s
admin: { listen: localhost:0, token_file: /etc/zctl/admin-token, tls: { cert_file: a.pem, key_file: b.pem, ca_file: ca.pem } }
events: { journal_size: 42 }
plugins: { path: [ /usr/lib/zctl/plugins, ./plugins ] }
sinks:
  - name: audit
    plugin: file
    filter: { namespaces: [cluster, connection], types: ["state.*", "stray"] }
    queue: { max_events: 10, when_full: drop_oldest, block_timeout: 0s, batch_max: 5 }
    retry: { initial: 50ms, max: 1m, max_attempts: 3 }
    spool: { dir: /var/spool/zctl, max_bytes: 1GiB }
    call_timeout: 2s
    config: { path: /var/log/zctl/events.jsonl }
)");
  CHECK(config.node.id == "ctrl1");
  CHECK(config.node.data_dir == "/var/lib/zctl/ctrl1");
  CHECK(config.mesh.listen == "0.0.0.0:6262");
  CHECK(config.mesh.max_frame_bytes == 65536);
  CHECK(config.mesh.max_pending == 500);
  CHECK(config.mesh.max_pending_per_source == 8);
  CHECK(config.mesh.tls.cert_file == "c.pem");
  CHECK(config.mesh.tls.key_file == "k.pem");
  CHECK(config.mesh.tls.ca_file == "ca.pem");
  CHECK_FALSE(config.mesh.tls.require_client_cert);
  CHECK(config.mesh.join_token_file == "/etc/zctl/join-token");
  CHECK(config.mesh.stray.grace_period == 90s);
  CHECK(config.mesh.stray.action == zctl::StrayAction::log);
  CHECK(config.mesh.stray.log_level == zctl::LogLevel::error);
  CHECK(config.mesh.flood.window == 5s);
  CHECK(config.mesh.flood.max_connections_per_source == 7);
  CHECK(config.cluster.id == "prod-eu");
  CHECK(config.cluster.allowed_nodes == std::vector<std::string>{"ctrl1", "ctrl2"});
  CHECK(config.cluster.raft_listen == "10.0.0.1:6263");
  CHECK(config.cluster.join == std::vector<std::string>{"10.0.0.1:6262", "ctrl2.example.com:6262"});
  CHECK(config.cluster.election_timeout == 2s);
  CHECK(config.cluster.heartbeat == 200ms);
  CHECK(config.cluster.leader_stability == 0ms);
  CHECK(config.admin.listen == "localhost:0");
  CHECK(config.admin.token_file == "/etc/zctl/admin-token");
  CHECK(config.admin.tls.enabled());
  CHECK(config.admin.tls.require_client_cert);
  CHECK(config.events.journal_size == 42);
  CHECK(config.plugins.path == std::vector<std::string>{"/usr/lib/zctl/plugins", "./plugins"});
  CHECK(config.sinks_given);
  REQUIRE(config.sinks.size() == 1);
  const auto& sink = config.sinks[0];
  CHECK(sink.name == "audit");
  CHECK(sink.plugin == "file");
  CHECK(sink.filter.namespaces == std::vector<std::string>{"cluster", "connection"});
  CHECK(sink.filter.types == std::vector<std::string>{"state.*", "stray"});
  CHECK(sink.queue.max_events == 10);
  CHECK(sink.queue.when_full == zctl::WhenFull::drop_oldest);
  CHECK(sink.queue.block_timeout == 0ms);
  CHECK(sink.queue.batch_max == 5);
  CHECK(sink.retry.initial == 50ms);
  CHECK(sink.retry.max == 1min);
  CHECK(sink.retry.max_attempts == 3);
  CHECK(sink.spool.dir == "/var/spool/zctl");
  CHECK(sink.spool.max_bytes == (1ull << 30));
  CHECK(sink.call_timeout == 2s);
  CHECK(sink.config_json == R"({"path":"/var/log/zctl/events.jsonl"})");
}

TEST_CASE("sinks: present but empty means no sinks", "[config]") {
  for (const char* text : {"sinks: []\n", "sinks:\n"}) {
    const auto config = parsed(text);
    CHECK(config.sinks_given);
    CHECK(config.sinks.empty());
  }
}

TEST_CASE("an empty section keeps its defaults", "[config]") {
  const auto config = parsed("mesh:\ncluster: {}\n");
  CHECK(config.mesh.max_pending == 10000);
  CHECK(config.cluster.heartbeat == 100ms);
}

TEST_CASE("the shipped examples parse cleanly", "[config]") {
  for (const char* name : {"examples/zctl.yaml", "examples/minimal.yaml"}) {
    const auto path = source_file(name);
    INFO(path.string());
    const auto result = zctl::load_config_file(path.string());
    INFO(describe(result.errors));
    CHECK(result.errors.empty());
    CHECK(result.config.has_value());
  }
  const auto full = zctl::load_config_file(source_file("examples/zctl.yaml").string());
  REQUIRE(full.config);
  CHECK(full.config->sinks_given);
  CHECK(full.config->sinks.size() == 2);
}

// ---------------------------------------------------------------------------
// Errors: each kind with its exact position

TEST_CASE("a YAML syntax error is one error at its position", "[config]") {
  const auto error = only_error("mesh:\n  listen: [0.0.0.0:6262\n");
  CHECK(error.line == 3);
  CHECK(error.column == 1);
  CHECK(error.path.empty());
  CHECK(error.message == "end of sequence flow not found");

  const auto tab = only_error("mesh:\n\tlisten: 0.0.0.0:1\n");
  CHECK(tab.line == 2);
  CHECK_FALSE(tab.message.empty());
}

TEST_CASE("an unquoted IPv6 address is a syntax error", "[config]") {
  // `[` starts a flow list in YAML, so "[::1]:6262" must be quoted.
  CHECK(only_error("mesh:\n  listen: [::1]:6262\n").line == 2);
}

TEST_CASE("the document must be one mapping", "[config]") {
  CHECK(located(only_error("- a\n- b\n")) == "1:1 : expected a mapping, got a list");
  CHECK(located(only_error("hello\n")) == "1:1 : expected a mapping, got 'hello'");
  CHECK(located(only_error("node: {}\n---\nmesh: {}\n")) ==
        "3:1 : expected one YAML document, found 2");
  CHECK(parsed("node: {id: a}\n---\n").node.id == "a");  // a trailing separator is harmless
}

TEST_CASE("unknown keys suggest the closest known key", "[config]") {
  CHECK(located(only_error("mesh:\n  stray:\n    gracePeriod: 30s\n")) ==
        "3:5 mesh.stray: unknown key 'gracePeriod' (did you mean 'grace_period'?)");
  CHECK(located(only_error("mesh:\n  max-pending: 5\n")) ==
        "2:3 mesh: unknown key 'max-pending' (did you mean 'max_pending'?)");
  CHECK(located(only_error("cluster:\n  hearbeat: 1s\n")) ==
        "2:3 cluster: unknown key 'hearbeat' (did you mean 'heartbeat'?)");
  CHECK(located(only_error("mesh:\n  MAX_PENDING: 5\n")) ==
        "2:3 mesh: unknown key 'MAX_PENDING' (did you mean 'max_pending'?)");
  CHECK(located(only_error("node: {ID: a}\n")) ==
        "1:8 node: unknown key 'ID' (did you mean 'id'?)");
  CHECK(located(only_error("Node: {id: a}\n")) ==
        "1:1 : unknown key 'Node' (did you mean 'node'?)");
  CHECK(located(only_error("sinks:\n  - name: a\n    plugin: p\n    Queue: {}\n")) ==
        "4:5 sinks[0]: unknown key 'Queue' (did you mean 'queue'?)");
}

TEST_CASE("unknown keys without a close match list the known keys", "[config]") {
  CHECK(located(only_error("node:\n  id: a\n  colour: red\n")) ==
        "3:3 node: unknown key 'colour' (known keys: id, data_dir)");
  CHECK(located(only_error("x: 1\n")) ==
        "1:1 : unknown key 'x' (known keys: node, mesh, cluster, admin, events, plugins, sinks)");
}

TEST_CASE("duplicate keys are errors", "[config]") {
  CHECK(located(only_error("node:\n  id: a\n  id: b\n")) ==
        "3:3 node.id: duplicate key 'id' (first given at 2:3)");
}

TEST_CASE("wrong types name what was expected and what was found", "[config]") {
  CHECK(located(only_error("mesh:\n  stray:\n    grace_period: fast\n")) ==
        "3:19 mesh.stray.grace_period: expected a duration like 500ms, 30s or 1m, got 'fast'");
  CHECK(located(only_error("cluster: { heartbeat: 100 }\n")) ==
        "1:23 cluster.heartbeat: expected a duration like 500ms, 30s or 1m, got '100' "
        "(a duration needs a unit: ms, s, m or h)");
  CHECK(located(only_error("mesh:\n  max_pending: lots\n")) ==
        "2:16 mesh.max_pending: expected a whole number, got 'lots'");
  CHECK(located(only_error("mesh:\n  max_pending: -1\n")) ==
        "2:16 mesh.max_pending: expected a whole number, got '-1'");
  CHECK(located(only_error("cluster:\n  bootstrap: yes\n")) ==
        "2:14 cluster.bootstrap: expected true or false, got 'yes'");
  CHECK(located(only_error("mesh: 5\n")) == "1:7 mesh: expected a mapping, got '5'");
  CHECK(located(only_error("mesh:\n  listen: { a: 1 }\n")) ==
        "2:11 mesh.listen: expected HOST:PORT like 0.0.0.0:6262 or \"[::1]:6262\", got a mapping");
  CHECK(located(only_error("cluster:\n  join: 10.0.0.1:6262\n")) ==
        "2:9 cluster.join: expected a list of HOST:PORT addresses, got '10.0.0.1:6262'");
  CHECK(located(
            only_error("sinks:\n  - name: a\n    plugin: p\n    spool: { max_bytes: 1.5GB }\n")) ==
        "4:25 sinks[0].spool.max_bytes: expected a size like 65536, 64KiB or 1GiB, got '1.5GB'");
}

TEST_CASE("a key with no value points at the key", "[config]") {
  // yaml-cpp places an empty value at the next token; the key is where to look.
  CHECK(located(only_error("node:\n  id:\n  data_dir: /x\n")) ==
        "2:3 node.id: expected a string, got nothing");
}

TEST_CASE("numbers out of range", "[config]") {
  CHECK(located(only_error("mesh:\n  max_frame_bytes: 63\n")) ==
        "2:20 mesh.max_frame_bytes: must be at least 64, got 63");
  CHECK(located(only_error("mesh:\n  max_frame_bytes: 4GiB\n")) ==
        "2:20 mesh.max_frame_bytes: must be at most 4294967295, got 4GiB");
  CHECK(located(only_error("events: { journal_size: 0 }\n")) ==
        "1:25 events.journal_size: must be at least 1, got 0");
  CHECK(located(only_error("mesh: { max_pending: 4294967296 }\n")) ==
        "1:22 mesh.max_pending: must be at most 4294967295, got 4294967296");
  CHECK(located(only_error("mesh: { flood: { max_connections_per_source: 0 } }\n")) ==
        "1:46 mesh.flood.max_connections_per_source: must be at least 1, got 0");
  CHECK(located(only_error("sinks: [ { name: a, plugin: p, queue: { batch_max: 0 } } ]\n")) ==
        "1:52 sinks[0].queue.batch_max: must be at least 1, got 0");
  CHECK(located(only_error("cluster: { election_timeout: 0s }\n")) ==
        "1:30 cluster.election_timeout: must be longer than 0s");
}

TEST_CASE("invalid enum values list the allowed ones", "[config]") {
  CHECK(
      located(only_error("sinks:\n  - name: a\n    plugin: p\n    queue: { when_full: kill }\n")) ==
      "4:25 sinks[0].queue.when_full: expected block, drop_newest or drop_oldest, got 'kill'");
  CHECK(located(only_error(
            "sinks:\n  - name: a\n    plugin: p\n    queue: { when_full: drop-newest }\n")) ==
        "4:25 sinks[0].queue.when_full: expected block, drop_newest or drop_oldest, got "
        "'drop-newest' (did you mean 'drop_newest'?)");
  CHECK(located(only_error("mesh: { stray: { action: kick } }\n")) ==
        "1:26 mesh.stray.action: expected none, log or disconnect, got 'kick'");
  CHECK(located(only_error("mesh: { stray: { log_level: loud } }\n")) ==
        "1:29 mesh.stray.log_level: expected trace, debug, info, warn, error, critical or off, "
        "got 'loud'");
  CHECK(located(
            only_error("sinks: [ { name: a, plugin: p, filter: { namespaces: [clustre] } } ]\n")) ==
        "1:55 sinks[0].filter.namespaces[0]: expected cluster, connection, node or sink, got "
        "'clustre' (did you mean 'cluster'?)");
}

TEST_CASE("log_level goes through parse_log_level", "[config]") {
  CHECK(parsed("mesh: { stray: { log_level: debug } }").mesh.stray.log_level ==
        zctl::LogLevel::debug);
  CHECK(parsed("mesh: { stray: { log_level: off } }").mesh.stray.log_level == zctl::LogLevel::off);
}

TEST_CASE("a spool directory belongs to one sink; dead_letter takes a path and a size", "[config]") {
  const auto shared = errors_of(R"(sinks:
  - name: a
    plugin: file
    spool: { dir: /var/spool/x }
  - name: b
    plugin: file
    spool: { dir: /var/spool/x }
)");
  REQUIRE(shared.size() == 1);
  CHECK(located(shared[0]) ==
        "7:19 sinks[1].spool.dir: spool directory '/var/spool/x' is already used by another sink (at 4:19)");
  const auto config = parsed(R"(sinks:
  - name: a
    plugin: file
    dead_letter: { path: /var/log/zctl/a.dead.jsonl, max_bytes: 1MiB }
)");
  CHECK(config.sinks[0].dead_letter.path == "/var/log/zctl/a.dead.jsonl");
  CHECK(config.sinks[0].dead_letter.max_bytes == 1u << 20);
  CHECK(parsed("sinks: [ { name: a, plugin: file } ]").sinks[0].dead_letter.path.empty());
  CHECK(located(only_error("sinks: [ { name: a, plugin: file, dead_letter: { path: '' } } ]")) ==
        "1:56 sinks[0].dead_letter.path: must not be empty");
}

TEST_CASE("sinks need a valid, unique name and a plugin", "[config]") {
  const auto duplicate = errors_of(R"(sinks:
  - name: audit
    plugin: file
  - name: audit
    plugin: file
)");
  REQUIRE(duplicate.size() == 1);
  CHECK(located(duplicate[0]) ==
        "4:11 sinks[1].name: duplicate sink name 'audit' (first defined at 2:11)");

  const auto missing = errors_of("sinks:\n  - filter: {}\n  - name: b\n");
  REQUIRE(missing.size() == 3);
  CHECK(located(missing[0]) == "2:5 sinks[0]: missing required key 'name'");
  CHECK(located(missing[1]) == "2:5 sinks[0]: missing required key 'plugin'");
  CHECK(located(missing[2]) == "3:5 sinks[1]: missing required key 'plugin'");

  CHECK(located(only_error("sinks:\n  - name: Audit Log\n    plugin: file\n")) ==
        "2:11 sinks[0].name: invalid sink name 'Audit Log': use lowercase letters, digits, '_' and "
        "'-'");
  CHECK(located(only_error("sinks:\n  - name: \"\"\n    plugin: file\n"))
            .find("invalid sink name ''") != std::string::npos);
  CHECK(located(only_error("sinks:\n  - name: a\n    plugin: \"\"\n")) ==
        "3:13 sinks[0].plugin: must not be empty");
  CHECK(located(only_error("sinks:\n  - just-a-name\n")) ==
        "2:5 sinks[0]: expected a sink mapping with at least name and plugin, got 'just-a-name'");
  CHECK(parsed("sinks: [ { name: a-b_9, plugin: file } ]").sinks[0].name == "a-b_9");
}

TEST_CASE("listen and peer addresses must be HOST:PORT", "[config]") {
  for (const char* good : {"0.0.0.0:6262", "127.0.0.1:0", "\"[::1]:6262\"", "localhost:6262",
                           "\"[::]:65535\"", "'[fe80::1]:1'"}) {
    INFO(good);
    CHECK(zctl::parse_config(std::string("mesh: { listen: ") + good + " }").errors.empty());
  }
  const auto listen_error = [](const char* address) {
    return only_error(std::string("mesh:\n  listen: ") + address + "\n");
  };
  const std::string hint = "; expected HOST:PORT like 0.0.0.0:6262 or \"[::1]:6262\"";
  CHECK(located(listen_error("0.0.0.0")) ==
        "2:11 mesh.listen: invalid address '0.0.0.0': missing ':PORT'" + hint);
  CHECK(located(listen_error("0.0.0.0:70000")) ==
        "2:11 mesh.listen: invalid address '0.0.0.0:70000': port must be a number from 0 to 65535" +
            hint);
  CHECK(listen_error("0.0.0.0:http").message.find("port must be a number") != std::string::npos);
  CHECK(listen_error("\"0.0.0.0:\"").message.find("port must be a number") != std::string::npos);
  CHECK(listen_error("\":6262\"").message.find("missing host") != std::string::npos);
  CHECK(listen_error("::1:6262").message.find("must be in brackets") != std::string::npos);
  CHECK(listen_error("\"[::1]\"").message.find("missing ':PORT'") != std::string::npos);
  CHECK(listen_error("\"[zz]:1\"").message.find("'zz' is not an IPv6 address") !=
        std::string::npos);
  CHECK(listen_error("300.1.1.1:1").message.find("'300.1.1.1' is not an IPv4 address") !=
        std::string::npos);
  CHECK(listen_error("ctrl1.example.com:6262").message.find("needs an IP address or localhost") !=
        std::string::npos);

  // Peers may be host names, but port 0 makes no sense for them.
  CHECK(parsed("cluster: { join: [ ctrl2.example.com:6262, \"[::1]:1\" ] }").cluster.join.size() ==
        2);
  CHECK(located(only_error("cluster:\n  join:\n    - 10.0.0.1:0\n")) ==
        "3:7 cluster.join[0]: invalid address '10.0.0.1:0': port 0 is only valid for listen "
        "addresses" +
            hint);
  CHECK(
      only_error("cluster: { join: [ -bad-.example:1 ] }").message.find("not a valid host name") !=
      std::string::npos);
}

TEST_CASE("the raft address is a fixed IPv4 address the other members can dial", "[config]") {
  CHECK(parsed("cluster: { raft_listen: 10.0.0.1:6263 }").cluster.raft_listen == "10.0.0.1:6263");
  const auto raft_error = [](const char* address) {
    return only_error(std::string("cluster:\n  raft_listen: ") + address + "\n").message;
  };
  CHECK(raft_error("0.0.0.0:6263").find("0.0.0.0 is not one") != std::string::npos);
  CHECK(raft_error("127.0.0.1:0").find("needs a fixed port, not 0") != std::string::npos);
  CHECK(raft_error("\"[::1]:6263\"").find("must be an IPv4 address") != std::string::npos);
  CHECK(raft_error("localhost:6263").find("must be an IPv4 address") != std::string::npos);
  // The shared rule the command-line flags use as well.
  using zctl::AddressUse;
  CHECK_FALSE(zctl::address_problem("127.0.0.1:6263", AddressUse::raft).has_value());
  CHECK(zctl::address_problem("127.0.0.1:0", AddressUse::listen) == std::nullopt);
  CHECK(zctl::address_problem("bogus", AddressUse::listen) == std::optional<std::string>("missing ':PORT'"));
}

TEST_CASE("TLS settings must be complete", "[config]") {
  CHECK(located(only_error("mesh:\n  tls:\n    key_file: k\n")) ==
        "3:5 mesh.tls: cert_file is required when key_file or ca_file is set");
  CHECK(located(only_error("admin:\n  tls: { cert_file: c }\n")) ==
        "2:8 admin.tls: key_file is required when cert_file is set");
  CHECK(located(only_error("mesh:\n  tls: { cert_file: c, key_file: k }\n")) ==
        "2:8 mesh.tls: ca_file is required to verify client certificates (or set "
        "require_client_cert: false)");
  CHECK(parsed("mesh: { tls: { cert_file: c, key_file: k, require_client_cert: false } }")
            .mesh.tls.enabled());
}

TEST_CASE("settings that contradict each other", "[config]") {
  CHECK(located(only_error("cluster:\n  election_timeout: 1s\n  heartbeat: 1s\n")) ==
        "3:14 cluster.heartbeat: heartbeat (1s) must be shorter than election_timeout (1s)");
  CHECK(located(only_error("cluster:\n  bootstrap: true\n  join: [ a:1 ]\n")) ==
        "3:9 cluster.join: bootstrap: true starts a new cluster and cannot be combined with join");
  CHECK(located(only_error(
            "sinks:\n  - name: a\n    plugin: p\n    retry: { initial: 1m, max: 30s }\n")) ==
        "4:32 sinks[0].retry.max: retry.max (30s) must not be shorter than retry.initial (1m)");
}

TEST_CASE("cluster ids and allowed node ids are checked like node ids", "[config]") {
  CHECK(located(only_error("cluster:\n  id: \"prod eu\"\n")) ==
        "2:7 cluster.id: invalid cluster id 'prod eu': use 1 to 64 letters, digits, '_' and '-'");
  CHECK(located(only_error("cluster:\n  allowed_nodes: [ ok, \"no/slash\" ]\n")) ==
        "2:24 cluster.allowed_nodes[1]: invalid node id 'no/slash': use 1 to 64 letters, digits, '_' and '-'");
}

TEST_CASE("every error is reported in one pass, in file order", "[config]") {
  const auto errors = errors_of(R"(node: { id: "bad id" }
mesh:
  listen: nowhere
  stray: { grace_period: soon, action: kick }
cluster:
  hearbeat: 1s
sinks:
  - name: a
    plugin: p
    queue: { when_full: maybe }
  - name: a
)");
  std::vector<std::string> got;
  for (const auto& error : errors) {
    got.push_back(std::to_string(error.line) + ":" + std::to_string(error.column) + " " +
                  error.path);
  }
  CHECK(got == std::vector<std::string>{
                   "1:13 node.id",
                   "3:11 mesh.listen",
                   "4:26 mesh.stray.grace_period",
                   "4:40 mesh.stray.action",
                   "6:3 cluster",
                   "10:25 sinks[0].queue.when_full",
                   "11:5 sinks[1]",
                   "11:11 sinks[1].name",
               });
}

// ---------------------------------------------------------------------------
// A sink's config subtree as JSON

TEST_CASE("config: becomes compact JSON", "[config]") {
  CHECK(parsed("sinks: [ { name: a, plugin: p } ]").sinks[0].config_json == "{}");
  CHECK(sink_config_json("") == "{}");
  CHECK(sink_config_json("{}") == "{}");
  CHECK(sink_config_json("{ path: /x, max_size_mb: 100 }") == R"({"path":"/x","max_size_mb":100})");
}

TEST_CASE("config: scalars follow the YAML core schema; quoted scalars stay strings", "[config]") {
  CHECK(sink_config_json(R"({ a: true, b: false, c: "true", d: 'false', e: TRUE })") ==
        R"({"a":true,"b":false,"c":"true","d":"false","e":true})");
  CHECK(sink_config_json(R"({ a: null, b: ~, c: , d: "null", e: '~' })") ==
        R"({"a":null,"b":null,"c":null,"d":"null","e":"~"})");
  CHECK(sink_config_json(R"({ a: 1, b: -2, c: 1.50, d: 1e3, e: "7", f: !!str 8 })") ==
        R"({"a":1,"b":-2,"c":1.50,"d":1e3,"e":"7","f":"8"})");
  CHECK(sink_config_json(R"({ a: 0x1F, b: 0o17, c: +5, d: 007, e: .5, f: -007 })") ==
        R"({"a":31,"b":15,"c":5,"d":7,"e":0.5,"f":-7})");
  CHECK(sink_config_json(R"({ a: yes, b: .inf, c: 10.0.0.1, d: 1_000, e: 2024-01-01, f: 1s })") ==
        R"({"a":"yes","b":".inf","c":"10.0.0.1","d":"1_000","e":"2024-01-01","f":"1s"})");
  CHECK(sink_config_json("{ big: 123456789012345678901234567890 }") ==
        R"({"big":123456789012345678901234567890})");
}

TEST_CASE("config: nested mappings and lists", "[config]") {
  const std::string yaml = R"(sinks:
  - name: k
    plugin: kafka
    config:
      topic: "events.{namespace}"
      properties:
        bootstrap.servers: "b1:9092,b2:9092"
        acks: all
      headers:
        - { name: X-A, value: 1 }
        - [ nested, [ deeper, { x: null } ] ]
      empty_list: []
      empty_map: {}
)";
  CHECK(
      parsed(yaml).sinks[0].config_json ==
      R"({"topic":"events.{namespace}","properties":{"bootstrap.servers":"b1:9092,b2:9092","acks":"all"},)"
      R"("headers":[{"name":"X-A","value":1},["nested",["deeper",{"x":null}]]],"empty_list":[],"empty_map":{}})");
}

TEST_CASE("config: strings are escaped for JSON", "[config]") {
  CHECK(sink_config_json(
            R"({ q: "say \"hi\"", bs: 'a\b', nl: "l1\nl2", tab: "a\tb", ctl: "\x01" })") ==
        R"({"q":"say \"hi\"","bs":"a\\b","nl":"l1\nl2","tab":"a\tb","ctl":"\u0001"})");
  // Non-ASCII stays UTF-8, which JSON allows.
  CHECK(sink_config_json(R"({ u: "\u00e9\U0001F600", raw: "日本" })") ==
        "{\"u\":\"\xC3\xA9\xF0\x9F\x98\x80\",\"raw\":\"\xE6\x97\xA5\xE6\x9C\xAC\"}");
  CHECK(sink_config_json("{ \"key \\\"q\\\"\": 1 }") == R"({"key \"q\"":1})");
  const std::string block = "\n      text: |\n        line one\n        line \"two\"\n";
  CHECK(sink_config_json(block) == R"({"text":"line one\nline \"two\"\n"})");
}

TEST_CASE("config: problems inside the subtree are errors", "[config]") {
  CHECK(located(only_error("sinks:\n  - name: a\n    plugin: p\n    config: [1, 2]\n")) ==
        "4:13 sinks[0].config: expected a mapping, got a list");
  CHECK(located(only_error("sinks:\n  - name: a\n    plugin: p\n    config: { k: 1, k: 2 }\n")) ==
        "4:21 sinks[0].config.k: duplicate key 'k' (first given at 4:15)");
  CHECK(located(only_error("sinks:\n  - name: a\n    plugin: p\n    config: { k: \"\xff\" }\n")) ==
        "4:18 sinks[0].config.k: value is not valid UTF-8");
}

// ---------------------------------------------------------------------------
// Durations and sizes

TEST_CASE("parse_duration", "[config]") {
  const std::vector<std::pair<const char*, zctl::Duration>> good = {
      {"0s", 0ms},         {"1ms", 1ms},
      {"500ms", 500ms},    {"30s", 30s},
      {"90s", 90s},        {"1m", 1min},
      {"2h", 2h},          {"1m30s", 90s},
      {"1s500ms", 1500ms}, {"1h2m3s4ms", 1h + 2min + 3s + 4ms},
      {"007s", 7s},
  };
  for (const auto& [text, expected] : good) {
    INFO(text);
    CHECK(zctl::parse_duration(text) == expected);
  }
  for (const char* bad : {"",
                          "500",
                          "0",
                          "fast",
                          "s",
                          "ms",
                          "1.5s",
                          "-1s",
                          "+1s",
                          "1 s",
                          " 1s",
                          "1s ",
                          "1S",
                          "1d",
                          "1us",
                          "1s1m",
                          "1m1m",
                          "1ms1s",
                          "30s1",
                          "1m30",
                          "1h_30m",
                          "99999999999999999999ms",
                          "9223372036854775807h"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(zctl::parse_duration(bad).has_value());
  }
}

TEST_CASE("format_duration prints the shortest exact form", "[config]") {
  CHECK(zctl::format_duration(0ms) == "0s");
  CHECK(zctl::format_duration(1ms) == "1ms");
  CHECK(zctl::format_duration(1500ms) == "1500ms");
  CHECK(zctl::format_duration(30s) == "30s");
  CHECK(zctl::format_duration(1min) == "1m");
  CHECK(zctl::format_duration(90s) == "1m30s");
  CHECK(zctl::format_duration(1h) == "1h");
  CHECK(zctl::format_duration(1h + 1s) == "1h1s");
  CHECK(zctl::format_duration(-30s) == "-30s");
  for (zctl::Duration d :
       {0ms, 1ms, 999ms, 1000ms, 61001ms, 3600000ms, 3723000ms, zctl::Duration(100h)}) {
    CHECK(zctl::parse_duration(zctl::format_duration(d)) == d);
  }
}

TEST_CASE("parse_size", "[config]") {
  const std::vector<std::pair<const char*, uint64_t>> good = {
      {"0", 0},
      {"1024", 1024},
      {"1B", 1},
      {"1KB", 1000},
      {"100MB", 100'000'000},
      {"2GB", 2'000'000'000},
      {"64KiB", 65536},
      {"1MiB", 1ull << 20},
      {"1GiB", 1ull << 30},
      {"18446744073709551615", 18446744073709551615ull},
  };
  for (const auto& [text, expected] : good) {
    INFO(text);
    CHECK(zctl::parse_size(text) == expected);
  }
  for (const char* bad : {"", "KiB", "B", "1.5GB", "-1", "+1", "1 KiB", " 1", "1kb", "1kib", "1K",
                          "1TB", "1GiBs", "0x10", "18446744073709551616", "20000000000GiB"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(zctl::parse_size(bad).has_value());
  }
}

// ---------------------------------------------------------------------------
// Defaults that depend on the machine

TEST_CASE("resolve_defaults fills node id and data_dir", "[config]") {
  ScopedEnv env("ZCTL_PLUGIN_PATH", nullptr);
  zctl::Config config;
  zctl::resolve_defaults(config, "/opt/zctl/bin");

  char host[256] = {};
  REQUIRE(gethostname(host, sizeof host - 1) == 0);
  std::string expected_id(host);
  expected_id = expected_id.substr(0, expected_id.find('.'));
  for (char& c : expected_id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  }
  CHECK(config.node.id == expected_id);
  CHECK(config.node.data_dir == "./zctl-data/" + config.node.id);

  zctl::Config given = parsed("node: { id: n1, data_dir: /srv/n1 }");
  zctl::resolve_defaults(given, "/opt/zctl/bin");
  CHECK(given.node.id == "n1");
  CHECK(given.node.data_dir == "/srv/n1");

  zctl::Config id_only = parsed("node: { id: n2 }");
  zctl::resolve_defaults(id_only, "/opt/zctl/bin");
  CHECK(id_only.node.data_dir == "./zctl-data/n2");
}

TEST_CASE("resolve_defaults builds the plugin path", "[config]") {
  SECTION("ZCTL_PLUGIN_PATH entries come first, empty entries are skipped") {
    ScopedEnv env("ZCTL_PLUGIN_PATH", "/a/plugins::/b/plugins:");
    zctl::Config config;
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    CHECK(config.plugins.path ==
          std::vector<std::string>{"/a/plugins", "/b/plugins", "/opt/zctl/lib/zctl/plugins"});
  }
  SECTION("without the variable only the executable-relative directory") {
    ScopedEnv env("ZCTL_PLUGIN_PATH", nullptr);
    zctl::Config config;
    zctl::resolve_defaults(config, "/usr/local/bin/");
    CHECK(config.plugins.path == std::vector<std::string>{"/usr/local/lib/zctl/plugins"});
  }
  SECTION("a configured path is kept as is") {
    ScopedEnv env("ZCTL_PLUGIN_PATH", "/ignored");
    zctl::Config config = parsed("plugins: { path: [ /mine ] }");
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    CHECK(config.plugins.path == std::vector<std::string>{"/mine"});
  }
}

TEST_CASE("resolve_defaults adds the file sink only when sinks: is absent", "[config]") {
  ScopedEnv env("ZCTL_PLUGIN_PATH", nullptr);
  SECTION("absent: one file sink under data_dir") {
    zctl::Config config = parsed("node: { id: n1, data_dir: /srv/zctl/n1 }");
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    REQUIRE(config.sinks.size() == 1);
    CHECK(config.sinks[0].name == "events");
    CHECK(config.sinks[0].plugin == "file");
    CHECK(config.sinks[0].config_json == R"({"path":"/srv/zctl/n1/events.jsonl"})");
    zctl::resolve_defaults(config, "/opt/zctl/bin");  // idempotent
    CHECK(config.sinks.size() == 1);
  }
  SECTION("the path is JSON-escaped") {
    zctl::Config config = parsed(R"(node: { id: n1, data_dir: 'C:\data "x"' })");
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    REQUIRE(config.sinks.size() == 1);
    CHECK(config.sinks[0].config_json == R"({"path":"C:\\data \"x\"/events.jsonl"})");
  }
  SECTION("an empty list means no sinks") {
    zctl::Config config = parsed("sinks: []");
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    CHECK(config.sinks.empty());
  }
  SECTION("a file sink without a path is left for the plugin to report") {
    zctl::Config config = parsed("sinks: [ { name: f, plugin: file } ]");
    zctl::resolve_defaults(config, "/opt/zctl/bin");
    REQUIRE(config.sinks.size() == 1);
    CHECK(config.sinks[0].config_json == "{}");
  }
}

// ---------------------------------------------------------------------------
// Files and messages

TEST_CASE("load_config_file", "[config]") {
  namespace fs = std::filesystem;
  SECTION("a missing file is one error without a position") {
    const auto result = zctl::load_config_file("/nonexistent/zctl.yaml");
    CHECK_FALSE(result.config);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].line == 0);
    CHECK(result.errors[0].message == "cannot read file: No such file or directory");
  }
  SECTION("a directory is one error") {
    const auto result = zctl::load_config_file(fs::temp_directory_path().string());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].message == "cannot read file: Is a directory");
  }
  SECTION("a readable file is parsed") {
    const fs::path path =
        fs::temp_directory_path() / ("zctl-test-config-" + std::to_string(getpid()) + ".yaml");
    {
      std::ofstream out(path);
      out << "node:\n  id: n1\n  bogus: 1\n";
    }
    const auto result = zctl::load_config_file(path.string());
    fs::remove(path);
    REQUIRE(result.errors.size() == 1);
    CHECK(zctl::format_config_error(result.errors[0], path.string()) ==
          path.string() + ":3:3: node: unknown key 'bogus' (known keys: id, data_dir)");
  }
}

TEST_CASE("format_config_error", "[config]") {
  CHECK(zctl::format_config_error({3, 7, "mesh.listen", "bad"}, "z.yaml") ==
        "z.yaml:3:7: mesh.listen: bad");
  CHECK(zctl::format_config_error({3, 0, "mesh.listen", "bad"}, "z.yaml") ==
        "z.yaml:3: mesh.listen: bad");
  CHECK(zctl::format_config_error({0, 0, "", "cannot read file: x"}, "z.yaml") ==
        "z.yaml: cannot read file: x");
  CHECK(zctl::format_config_error({1, 1, "", "syntax"}, "z.yaml") == "z.yaml:1:1: syntax");
  CHECK(zctl::format_config_error({2, 5, "node", "oops"}, "") == "2:5: node: oops");
}

TEST_CASE("enum spellings round-trip", "[config]") {
  CHECK(zctl::to_string(zctl::StrayAction::none) == "none");
  CHECK(zctl::to_string(zctl::StrayAction::log) == "log");
  CHECK(zctl::to_string(zctl::StrayAction::disconnect) == "disconnect");
  CHECK(zctl::to_string(zctl::WhenFull::block) == "block");
  CHECK(zctl::to_string(zctl::WhenFull::drop_newest) == "drop_newest");
  CHECK(zctl::to_string(zctl::WhenFull::drop_oldest) == "drop_oldest");
  for (auto when_full :
       {zctl::WhenFull::block, zctl::WhenFull::drop_newest, zctl::WhenFull::drop_oldest}) {
    const auto config = parsed("sinks: [ { name: a, plugin: p, queue: { when_full: " +
                               std::string(zctl::to_string(when_full)) + " } } ]");
    CHECK(config.sinks[0].queue.when_full == when_full);
  }
}
