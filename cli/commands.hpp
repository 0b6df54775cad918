// The zctl command line. Each subcommand lives in its own cmd_*.cpp with an
// options struct and a register function that returns its runner; app.cpp
// wires them and maps outcomes to exit codes.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "zctl/core/admin_http.hpp"

namespace zctl::cli {

// Exit codes (SPEC §3).
enum ExitCode : int {
  kExitOk = 0,
  kExitCheckFailed = 1,  // probe verdict, config invalid
  kExitRefused = 1,      // the node refused the request (zctl cluster)
  kExitUsage = 2,
  kExitUnreachable = 3,  // cannot reach the node
  kExitRuntime = 4,
};

using Runner = std::function<int()>;

// Each returns the runner that executes once the subcommand was parsed.
Runner register_serve(CLI::App& app);
Runner register_watch(CLI::App& app);
Runner register_probe(CLI::App& app);
Runner register_cluster(CLI::App& app);
Runner register_plugins(CLI::App& app);
Runner register_sink(CLI::App& app);
Runner register_config(CLI::App& app);
Runner register_completion(CLI::App& app);
Runner register_version(CLI::App& app);

int run(int argc, char** argv);

// The directory of the running executable, to find ../lib/zctl/plugins.
std::string executable_dir();
// Completion scripts embedded from completions/ at build time.
std::string_view completion_script(std::string_view shell);
// True when stdout is a terminal (colours, table output by default).
bool stdout_is_terminal();
// The admin API bearer token of --token-file: the file's first line, without
// a trailing '\r'. nullopt when the file cannot be read.
std::optional<std::string> read_token_file(const std::string& path);
// --ca-file, --cert-file and --key-file: the client side of an https:// node
// URL (a node with admin.tls), the same on every command that talks to one.
void add_admin_tls_options(CLI::App& cmd, TlsClientFiles& files);

}  // namespace zctl::cli
