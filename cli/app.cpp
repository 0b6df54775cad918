#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "commands.hpp"
#include "zctl/core/log.hpp"

namespace zctl::cli {

std::string executable_dir() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

void add_admin_tls_options(CLI::App& cmd, TlsClientFiles& files) {
  cmd.add_option("--ca-file", files.ca_file,
                 "https: the CA that signed the node's certificate (default: the system's trust store)")
      ->check(CLI::ExistingFile);
  auto* cert = cmd.add_option("--cert-file", files.cert_file, "https: this client's certificate (admin.tls asks for one)")
                   ->check(CLI::ExistingFile);
  auto* key = cmd.add_option("--key-file", files.key_file, "https: the key of --cert-file")->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
}

std::optional<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string token;
  std::getline(in, token);
  if (!token.empty() && token.back() == '\r') token.pop_back();
  return token;
}

int run(int argc, char** argv) {
  CLI::App app{"zctl - run and observe a cluster of control-plane controller nodes", "zctl"};
  app.footer(
      "Examples:\n"
      "  zctl serve                                  single-node cluster on loopback\n"
      "  zctl serve --config /etc/zctl/zctl.yaml     node from a config file\n"
      "  zctl watch --type 'state.*'                 follow cluster state events\n"
      "  zctl probe 127.0.0.1:6262 --mode hello      check that the node closes a stalled handshake\n"
      "  zctl cluster list                           members, leader and connectivity\n"
      "  zctl config check /etc/zctl/zctl.yaml       validate a config\n"
      "  zctl plugins list                           show the sink plugins found\n"
      "  zctl sink test events                       send test events through the sink 'events'\n\n"
      "Exit codes: 0 ok, 1 check failed, 2 usage error, 3 cannot reach the node, 4 runtime failure.\n"
      "See zctl(1) and zctl-<command>(1).");
  app.set_version_flag("--version", std::string("zctl ") + ZCTL_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand too
  std::string log_level = "info";
  std::string log_format = "text";
  app.add_option("--log-level", log_level, "Log level: trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", log_format, "Log format on stderr: text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();

  std::map<CLI::App*, Runner> runners;
  const auto add = [&](Runner (*reg)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    Runner r = reg(app);
    runners[app.get_subcommands({})[before]] = std::move(r);
  };
  add(register_serve);
  add(register_watch);
  add(register_probe);
  add(register_cluster);
  add(register_plugins);
  add(register_sink);
  add(register_config);
  add(register_completion);
  add(register_version);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  configure_logging(*parse_log_level(log_level), log_format == "json" ? LogFormat::json : LogFormat::text);
  for (auto& [sub, runner] : runners) {
    if (sub->parsed()) {
      try {
        return runner();
      } catch (const std::exception& e) {
        std::cerr << "zctl: " << e.what() << "\n";
        return kExitRuntime;
      }
    }
  }
  return kExitUsage;
}

}  // namespace zctl::cli
