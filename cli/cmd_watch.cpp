#include <unistd.h>

#include <iostream>

#include "commands.hpp"
#include "zctl/core/event_stream.hpp"

namespace zctl::cli {

namespace {

struct WatchOptions {
  std::string node = "http://127.0.0.1:6280";
  std::vector<std::string> namespaces;
  std::vector<std::string> types;
  std::optional<uint64_t> since;
  uint64_t count = 0;
  std::string output;
  std::string token_file;
  TlsClientFiles tls;
};

int run_watch(const WatchOptions& o) {
  EventStreamOptions options;
  options.node_url = o.node;
  options.namespaces = o.namespaces;
  options.types = o.types;
  options.since = o.since;
  options.tls = o.tls;
  if (!o.token_file.empty()) {
    auto token = read_token_file(o.token_file);
    if (!token) {
      std::cerr << "zctl watch: cannot read token file " << o.token_file << "\n";
      return kExitUsage;
    }
    options.bearer_token = std::move(*token);
  }
  std::unique_ptr<EventStreamClient> client;
  try {
    client = std::make_unique<EventStreamClient>(options);
  } catch (const std::invalid_argument& e) {
    std::cerr << "zctl watch: " << e.what() << "\n";
    return kExitUsage;
  }
  const bool tty = stdout_is_terminal();
  const bool json = o.output.empty() ? !tty : o.output == "json";
  const bool color = tty && !json && ::getenv("NO_COLOR") == nullptr;
  uint64_t printed = 0;
  return client->run(
      [&](uint64_t, const std::string& event_json) {
        if (json) {
          std::cout << event_json << '\n';
        } else {
          std::cout << format_event_line(event_json, color) << '\n';
        }
        std::cout.flush();
        ++printed;
        return o.count == 0 || printed < o.count;
      },
      [&](const StreamNotice& notice) {
        switch (notice.kind) {
          case StreamNotice::Kind::connected:
            if (tty) std::cerr << "connected to " << notice.detail << "\n";
            break;
          case StreamNotice::Kind::disconnected:
            std::cerr << "zctl watch: " << notice.detail << "\n";
            break;
          case StreamNotice::Kind::gap:
            std::cerr << "zctl watch: warning: events were missed, no longer in the node's journal: " << notice.detail
                      << "\n";
            break;
          case StreamNotice::Kind::overflow:
            std::cerr << "zctl watch: fell behind the node's journal; reconnecting: " << notice.detail << "\n";
            break;
        }
      });
}

}  // namespace

Runner register_watch(CLI::App& app) {
  auto o = std::make_shared<WatchOptions>();
  auto* cmd = app.add_subcommand("watch", "Stream events from a node");
  cmd->footer(
      "Follows GET /v1/events (Server-Sent Events). On a dropped connection it reconnects with backoff and\n"
      "resumes after the last event printed: no duplicates, and any events the node no longer holds are\n"
      "reported on stderr.\n\n"
      "Examples:\n"
      "  zctl watch\n"
      "  zctl watch --namespace connection --type stray\n"
      "  zctl watch --type 'state.*' -o json | jq .leaderId\n"
      "  zctl watch --since 0 --count 100 -o json > events.jsonl\n"
      "  zctl watch --node https://10.0.0.1:6280 --ca-file ca.crt --cert-file me.crt --key-file me.key");
  cmd->add_option("--node", o->node, "Admin API URL of the node")->capture_default_str();
  cmd->add_option("--namespace", o->namespaces, "Only this namespace (repeatable): cluster, connection, node, sink");
  cmd->add_option("--type", o->types, "Only event types matching this glob (repeatable), e.g. 'state.*'");
  cmd->add_option("--since", o->since, "Replay from the journal every event after this seq (0 = all it holds)");
  cmd->add_option("--count", o->count, "Exit after N events (0 = never)");
  cmd->add_option("-o,--output", o->output, "table (default on a terminal) or json (one event per line)")
      ->check(CLI::IsMember({"table", "json"}));
  cmd->add_option("--token-file", o->token_file, "File holding the admin API bearer token")->check(CLI::ExistingFile);
  add_admin_tls_options(*cmd, o->tls);
  return [o] { return run_watch(*o); };
}

}  // namespace zctl::cli
