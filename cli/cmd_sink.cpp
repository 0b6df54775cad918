#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <optional>

#include "commands.hpp"
#include "zctl/core/config.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/sink_host.hpp"
#include "zctl/core/sink_test.hpp"

namespace zctl::cli {

namespace {

struct SinkTestCliOptions {
  std::string name;
  std::string config_file;
  std::string id;
  std::string data_dir;
  uint64_t count = 10;
  std::string timeout = "30s";
  std::string output;
};

// The node's configuration as `zctl serve` builds it from the same flags.
std::optional<Config> load_config(const SinkTestCliOptions& o) {
  Config config;
  if (!o.config_file.empty()) {
    auto parsed = load_config_file(o.config_file);
    if (!parsed.config) {
      for (const auto& e : parsed.errors) std::cerr << format_config_error(e, o.config_file) << "\n";
      std::cerr << "zctl sink test: configuration invalid (" << parsed.errors.size() << " error"
                << (parsed.errors.size() == 1 ? "" : "s") << ")\n";
      return std::nullopt;
    }
    config = std::move(*parsed.config);
  }
  if (!o.id.empty()) config.node.id = o.id;
  if (!o.data_dir.empty()) config.node.data_dir = o.data_dir;
  resolve_defaults(config, executable_dir());
  return config;
}

std::string unknown_sink_message(const SinkTestCliOptions& o, const Config& config) {
  const std::string where = o.config_file.empty() ? "the default configuration (no --config)" : o.config_file;
  if (config.sinks.empty()) return "no sink named '" + o.name + "': " + where + " configures no sinks";
  std::string names;
  for (const auto& sink : config.sinks) names += (names.empty() ? "" : ", ") + sink.name;
  return "no sink named '" + o.name + "' in " + where + "; configured sinks: " + names;
}

void print_table(const SinkTestReport& r, bool color) {
  const auto row = [](const char* label) -> std::ostream& { return std::cout << std::left << std::setw(15) << label; };
  row("sink") << r.sink << " (plugin " << r.plugin;
  if (!r.plugin_version.empty()) std::cout << " " << r.plugin_version;
  if (!r.plugin_path.empty()) std::cout << ", " << r.plugin_path;
  std::cout << ")\n";
  row("sent") << r.count << (r.count == 1 ? " event" : " events") << " node/sink_test, seq 1.." << r.count
              << ", event_src_id " << r.source_id << ", runId " << r.run_id << "\n";
  row("delivered") << r.delivered;
  if (r.batches > 0) std::cout << " in " << r.batches << (r.batches == 1 ? " batch" : " batches");
  std::cout << "\n";
  row("failed") << r.failed << (r.failed > 0 ? "  (rejected or out of retries; the reason is in the log)" : "") << "\n";
  row("retried") << r.retried << (r.retried == 1 ? " failed attempt" : " failed attempts") << " (counted per event)\n";
  row("undelivered") << r.undelivered;
  if (r.timed_out && r.undelivered > 0) std::cout << "  (still queued or in flight at the timeout; discarded)";
  std::cout << "\n";
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.0f", r.events_per_second);
  row("elapsed") << format_probe_duration(r.elapsed) << " (timeout " << format_duration(r.timeout) << "), " << rate
                 << " events/s delivered\n";
  row("latency");
  if (r.latency.count == 0) {
    std::cout << "-\n";
  } else {
    std::cout << "min " << format_probe_duration(r.latency.min) << "  p50 " << format_probe_duration(r.latency.p50)
              << "  p99 " << format_probe_duration(r.latency.p99) << "  max " << format_probe_duration(r.latency.max)
              << "  (queued to delivered, " << r.latency.count << (r.latency.count == 1 ? " event)" : " events)")
              << "\n";
  }
  row("health") << (r.up ? "up" : "down" + (r.down_reason.empty() ? std::string() : ": " + r.down_reason)) << "\n";
  for (const auto& reason : r.health_reasons) {
    if (r.up || reason != r.down_reason) row("") << "was unhealthy: " << reason << "\n";
  }
  const char* green = color ? "\033[32m" : "";
  const char* red = color ? "\033[31m" : "";
  const char* reset = color ? "\033[0m" : "";
  row("verdict") << (r.pass() ? green : red) << (r.pass() ? "PASS" : "FAIL") << reset << "\n";
  for (const auto& failure : r.failures()) std::cout << "  - " << failure << "\n";
}

int run_sink_test_command(const SinkTestCliOptions& o) {
  const auto timeout = parse_duration(o.timeout);
  if (!timeout || *timeout <= Duration(0)) {
    std::cerr << "zctl sink test: --timeout: expected a duration above 0 such as 500ms, 30s or 1m30s, got '"
              << o.timeout << "'\n";
    return kExitUsage;
  }
  const auto config = load_config(o);
  if (!config) return kExitCheckFailed;
  const SinkConfig* sink = nullptr;
  for (const auto& s : config->sinks) {
    if (s.name == o.name) sink = &s;
  }
  if (sink == nullptr) {
    std::cerr << "zctl sink test: " << unknown_sink_message(o, *config) << "\n";
    return kExitUsage;
  }

  SinkTestOptions options;
  options.count = o.count;
  options.timeout = *timeout;
  options.source_id = config->node.id;
  SinkTestReport report;
  try {
    report = run_sink_test(*sink, PluginHost(config->plugins.path), options);
  } catch (const SinkSetupError& e) {
    // The same words `zctl serve` uses for a sink it cannot start.
    std::cerr << "zctl sink test: cannot set up " << e.what() << "\n";
    return kExitCheckFailed;
  } catch (const std::invalid_argument& e) {
    std::cerr << "zctl sink test: " << e.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "zctl sink test: " << e.what() << "\n";
    return kExitRuntime;
  }

  const bool tty = stdout_is_terminal();
  const bool json = o.output.empty() ? !tty : o.output == "json";
  if (json) {
    std::cout << sink_test_report_json(report) << "\n";
  } else {
    print_table(report, tty && ::getenv("NO_COLOR") == nullptr);
  }
  std::cout.flush();
  return report.pass() ? kExitOk : kExitCheckFailed;
}

}  // namespace

Runner register_sink(CLI::App& app) {
  auto o = std::make_shared<SinkTestCliOptions>();
  auto* cmd = app.add_subcommand("sink", "Work with the sinks of a configuration");
  cmd->require_subcommand(1);
  cmd->footer("Example:\n  zctl sink test audit --config /etc/zctl/zctl.yaml");
  auto* test = cmd->add_subcommand("test", "Send synthetic events through one configured sink and report delivery");
  test->footer(
      "Loads the config like zctl serve (without --config: the embedded defaults, whose one sink 'events'\n"
      "writes <data_dir>/events.jsonl), loads the sink's plugin from plugins.path and runs that one sink\n"
      "with its queue, batching, retry and call_timeout settings. Its filter, spool and dead-letter file\n"
      "are not used. The events are node/sink_test with \"test\":true, seq 1..N of their own, and\n"
      "event_src_id the node's id; the node's own sequence numbers are not used.\n\n"
      "Exit status: 0 every event delivered within --timeout; 1 an event failed or was not delivered in\n"
      "time, the config is invalid, or the sink cannot be set up (plugin missing or refused, its config\n"
      "rejected); 2 usage error, including a NAME the config does not have; 4 runtime failure.\n\n"
      "Examples:\n"
      "  zctl sink test events                                   the default file sink\n"
      "  zctl sink test siem --config /etc/zctl/zctl.yaml --count 100\n"
      "  zctl sink test siem -c /etc/zctl/zctl.yaml --timeout 5s -o json | jq .verdict");
  test->add_option("NAME", o->name, "The sink's name (sinks[].name)")->required();
  test->add_option("-c,--config", o->config_file, "YAML config file (see zctl.yaml(5))")->check(CLI::ExistingFile);
  test->add_option("--id", o->id, "Node id: event_src_id of the events (default: node.id, else the short host name)");
  test->add_option("--data-dir", o->data_dir, "Data directory, for the default sink's path (default: node.data_dir)");
  test->add_option("--count", o->count, "Events to send")
      ->check(CLI::Range(uint64_t{1}, kMaxSinkTestEvents))
      ->capture_default_str();
  test->add_option("--timeout", o->timeout, "How long to wait for delivery, from the first event")
      ->capture_default_str();
  test->add_option("-o,--output", o->output, "table (default on a terminal) or json (one object)")
      ->check(CLI::IsMember({"table", "json"}));
  return [o] { return run_sink_test_command(*o); };
}

}  // namespace zctl::cli
