#include <iostream>

#include "commands.hpp"
#include "zctl/core/engine.hpp"

namespace zctl::cli {

namespace {

struct ServeOptions {
  std::string config_file;
  std::string id;
  std::string data_dir;
  std::string admin;
  std::string mesh;
  std::string raft;
  std::string join_token_file;
  bool bootstrap = false;
  std::vector<std::string> join;
};

// Config file (or the embedded default) + flags + derived defaults.
std::vector<std::string> build_config(const ServeOptions& o, Config& out) {
  Config config;
  if (!o.config_file.empty()) {
    auto parsed = load_config_file(o.config_file);
    if (!parsed.config) {
      std::vector<std::string> errors;
      for (const auto& e : parsed.errors) errors.push_back(format_config_error(e, o.config_file));
      return errors;
    }
    config = std::move(*parsed.config);
  }
  // Flags follow the config file's rules for the same keys.
  std::vector<std::string> flag_errors;
  const auto check = [&](const char* flag, const std::string& value, AddressUse use) {
    if (const auto problem = address_problem(value, use)) {
      flag_errors.push_back(std::string(flag) + ": invalid address '" + value + "': " + *problem);
    }
  };
  if (!o.admin.empty()) check("--admin", o.admin, AddressUse::listen);
  if (!o.mesh.empty()) check("--mesh", o.mesh, AddressUse::listen);
  if (!o.raft.empty()) check("--raft", o.raft, AddressUse::raft);
  for (const auto& seed : o.join) check("--join", seed, AddressUse::peer);
  if (!flag_errors.empty()) return flag_errors;
  if (!o.id.empty()) config.node.id = o.id;
  if (!o.data_dir.empty()) config.node.data_dir = o.data_dir;
  if (!o.admin.empty()) config.admin.listen = o.admin;
  if (!o.mesh.empty()) config.mesh.listen = o.mesh;
  if (!o.raft.empty()) config.cluster.raft_listen = o.raft;
  if (!o.join_token_file.empty()) config.mesh.join_token_file = o.join_token_file;
  if (o.bootstrap) {
    config.cluster.bootstrap = true;
    config.cluster.join.clear();
  }
  if (!o.join.empty()) {
    config.cluster.join = o.join;
    config.cluster.bootstrap = false;
  }
  resolve_defaults(config, executable_dir());
  out = std::move(config);
  return {};
}

int run_serve(const ServeOptions& o) {
  Config config;
  if (const auto errors = build_config(o, config); !errors.empty()) {
    for (const auto& e : errors) std::cerr << e << "\n";
    std::cerr << "zctl serve: configuration invalid (" << errors.size() << " error" << (errors.size() == 1 ? "" : "s")
              << ")\n";
    return kExitCheckFailed;
  }
  Engine engine(config, [o](Config& next) { return build_config(o, next); });
  try {
    engine.start();
  } catch (const StartupError& e) {
    std::cerr << "zctl serve: cannot start: " << e.what() << "\n";
    return e.exit_code();
  }
  const EngineInfo& info = engine.info();
  std::cout << "zctl " << ZCTL_VERSION << ": node '" << info.node_id << "' serving\n"
            << "  mesh       " << info.mesh_address << "  (peers join here; see zctl-protocol(7))\n"
            << "  admin API  " << info.admin_url << "  (/healthz /readyz /metrics /v1/events /v1/sinks)\n"
            << "  data dir   " << info.data_dir << "\n";
  for (const auto& sink : info.sinks) std::cout << "  sink       " << sink << "\n";
  if (info.sinks.empty()) std::cout << "  sinks      none configured\n";
  std::cout << "  events     from seq " << info.first_seq << (info.seq_recovered_from_crash ? " (after an unclean stop)" : "")
            << "\n"
            << "  follow     zctl watch --node " << info.admin_url << "\n"
            << "Stop with Ctrl-C or SIGTERM; SIGHUP reloads sinks." << std::endl;
  engine.run();
  std::cout << "zctl: node '" << info.node_id << "' stopped" << std::endl;
  return kExitOk;
}

}  // namespace

Runner register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Run a controller node");
  cmd->footer(
      "With no config and no flags: a single node on loopback, mesh port 127.0.0.1:6262, admin API\n"
      "127.0.0.1:6280, data under ./zctl-data/<id>, and the file sink writing\n"
      "./zctl-data/<id>/events.jsonl.\n\n"
      "Examples:\n"
      "  zctl serve\n"
      "  zctl serve --id ctrl1 --data-dir /var/lib/zctl/ctrl1 --admin 127.0.0.1:6280\n"
      "  zctl serve --mesh 0.0.0.0:6262 --join-token-file /etc/zctl/join-token\n"
      "  zctl serve --id ctrl2 --mesh 10.0.0.2:6262 --raft 10.0.0.2:6263 --join 10.0.0.1:6262 \\\n"
      "             --join-token-file /etc/zctl/join-token\n"
      "  zctl serve --config /etc/zctl/zctl.yaml\n\n"
      "Signals: SIGINT/SIGTERM stop cleanly (queued sink events are drained for up to 5 s);\n"
      "SIGHUP re-reads the config's sinks and reopens files. See zctl-serve(1).");
  cmd->add_option("-c,--config", o->config_file, "YAML config file (see zctl.yaml(5))")->check(CLI::ExistingFile);
  cmd->add_option("--id", o->id, "Node id (default: the short host name)");
  cmd->add_option("--data-dir", o->data_dir, "Data directory (default: ./zctl-data/<id>)");
  cmd->add_option("--admin", o->admin, "Admin API listen address HOST:PORT (default 127.0.0.1:6280; port 0 = any)");
  cmd->add_option("--mesh", o->mesh, "Mesh port listen address HOST:PORT (default 127.0.0.1:6262; port 0 = any)");
  cmd->add_option("--raft", o->raft, "Raft transport address, an IPv4 HOST:PORT (default 127.0.0.1:6263)");
  auto* bootstrap = cmd->add_flag("--bootstrap", o->bootstrap,
                                  "Start a new cluster with this node as its only voter (the default when no join "
                                  "target is configured; a restart reuses the data dir either way)");
  cmd->add_option("--join", o->join,
                  "Join an existing cluster through this member's mesh port HOST:PORT (repeatable; the leader adds "
                  "this node, a follower redirects to it)")
      ->excludes(bootstrap);
  cmd->add_option("--join-token-file", o->join_token_file, "File holding the cluster's join token (mesh.join_token_file)")
      ->check(CLI::ExistingFile);
  return [o] { return run_serve(*o); };
}

}  // namespace zctl::cli
