#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>

#include "commands.hpp"
#include "zctl/core/config.hpp"
#include "zctl/core/probe.hpp"

namespace zctl::cli {

namespace {

struct ProbeCliOptions {
  std::string target;
  std::string mode = "idle";
  size_t connections = 1;
  size_t concurrency = 0;
  std::string expect_grace = "30s";
  std::string tolerance = "1s";
  std::string timeout;
  std::string output;
  std::string node_id = "zctl-probe";
  std::string cluster_id = "zctl";
  std::string raft_addr = "127.0.0.1:1";
  std::string token_file;
  bool tls = false;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string server_name;
  bool insecure = false;
  uint64_t seed = 1;
};

// A duration flag; nullopt (after a message) when it does not parse.
std::optional<std::chrono::milliseconds> duration_flag(const char* flag, const std::string& text) {
  const auto value = parse_duration(text);
  if (!value) {
    std::cerr << "zctl probe: " << flag << ": expected a duration such as 500ms, 30s or 1m30s, got '" << text << "'\n";
  }
  return value;
}

std::string counts_text(const std::map<std::string, size_t>& counts) {
  std::string text;
  for (const auto& [key, count] : counts) text += (text.empty() ? "" : ", ") + key + " " + std::to_string(count);
  return text;
}

std::string summary_text(const DurationSummary& s) {
  if (s.count == 0) return "-";
  return "min " + format_probe_duration(s.min) + "  p50 " + format_probe_duration(s.p50) + "  p99 " +
         format_probe_duration(s.p99) + "  max " + format_probe_duration(s.max);
}

void print_table(const ProbeReport& r, bool color) {
  const ProbeOptions& o = r.options;
  const ProbeKind kind = kind_of(o.mode);
  const auto row = [](const char* label) -> std::ostream& { return std::cout << std::left << std::setw(15) << label; };
  const auto d = [](std::chrono::milliseconds ms) { return format_probe_duration(ms); };

  row("target") << o.target;
  if (!r.endpoint.empty() && r.endpoint != o.target) std::cout << " (" << r.endpoint << ")";
  std::cout << "\n";
  row("mode") << to_string(o.mode) << (o.tls ? ", over TLS" : ", plain TCP") << "\n";
  if (!r.error.empty()) {
    row("error") << r.error << "\n";
  } else {
    row("connections") << r.opened << " opened of " << r.attempted << " (" << o.concurrency << " at a time)";
    if (r.connect_failed > 0) std::cout << ", " << r.connect_failed << " failed to connect";
    std::cout << "\n";
    if (kind == ProbeKind::join) {
      row("closed") << r.closed_by_node << " by the node before answering";
    } else {
      row("closed") << r.closed_by_node << " by the node";
      if (!r.close_reasons.empty()) std::cout << " (" << counts_text(r.close_reasons) << ")";
    }
    std::cout << ", " << r.timed_out << " still open at the " << d(*o.timeout) << " timeout\n";
    if (r.opened > 0) row("replies") << counts_text(r.replies) << "\n";
    if (!r.versions.empty()) {
      row("versions");
      for (size_t i = 0; i < r.versions.size(); ++i)
        std::cout << (i ? ", " : "") << static_cast<unsigned>(r.versions[i]);
      std::cout << "  (the versions the node speaks)\n";
    }
    for (const auto& detail : r.details) row("detail") << detail << "\n";
    for (const auto& [error, count] : r.errors) row("error") << count << " x " << error << "\n";
    row(r.measures_latency ? "join latency" : "time to close") << summary_text(r.times);
    if (r.times.count > 0) {
      std::cout << (r.measures_latency ? "  (TCP connect to answer, " : "  (from TCP connect, ") << r.times.count
                << (r.times.count == 1 ? " connection)" : " connections)");
    }
    std::cout << "\n";
    if (r.connect_times.count > 0) row("tcp connect") << summary_text(r.connect_times) << "\n";
  }
  row("expected");
  switch (kind) {
    case ProbeKind::stalling:
      std::cout << "closed by the node " << d(o.expect_grace) << " to " << d(o.expect_grace + o.tolerance)
                << " after connect" << (o.mode == ProbeMode::hello ? ", after hello_ack" : "") << "\n";
      break;
    case ProbeKind::immediate:
      std::cout << "closed by the node within " << d(o.tolerance) << " of connect";
      if (const std::string reply = expected_reply(o, 0); !reply.empty()) std::cout << ", after " << reply;
      std::cout << "\n";
      break;
    case ProbeKind::join:
      std::cout << "accepted\n";
      break;
  }
  const char* green = color ? "\033[32m" : "";
  const char* red = color ? "\033[31m" : "";
  const char* reset = color ? "\033[0m" : "";
  row("verdict") << (r.pass ? green : red) << (r.pass ? "PASS" : "FAIL") << reset << "\n";
  for (const auto& failure : r.failures) std::cout << "  - " << failure << "\n";
}

int run_probe_command(const ProbeCliOptions& c) {
  ProbeOptions o;
  o.target = c.target;
  o.mode = *parse_probe_mode(c.mode);  // CLI11 checked the name
  o.connections = c.connections;
  o.concurrency = c.concurrency;
  const auto grace = duration_flag("--expect-grace", c.expect_grace);
  const auto tolerance = duration_flag("--tolerance", c.tolerance);
  if (!grace || !tolerance) return kExitUsage;
  o.expect_grace = *grace;
  o.tolerance = *tolerance;
  if (!c.timeout.empty()) {
    o.timeout = duration_flag("--timeout", c.timeout);
    if (!o.timeout) return kExitUsage;
  }
  o.node_id = c.node_id;
  o.cluster_id = c.cluster_id;
  o.raft_addr = c.raft_addr;
  if (!c.token_file.empty()) {
    std::ifstream in(c.token_file, std::ios::binary);
    if (!in) {
      std::cerr << "zctl probe: cannot read token file " << c.token_file << "\n";
      return kExitUsage;
    }
    o.token.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    while (!o.token.empty() && (o.token.back() == '\n' || o.token.back() == '\r')) o.token.pop_back();
  }
  o.tls = c.tls;
  o.ca_file = c.ca_file;
  o.cert_file = c.cert_file;
  o.key_file = c.key_file;
  o.server_name = c.server_name;
  o.insecure = c.insecure;
  o.seed = c.seed;

  try {
    o = validate_probe_options(o);
  } catch (const std::invalid_argument& e) {
    std::cerr << "zctl probe: " << e.what() << "\n";
    return kExitUsage;
  }

  const bool tty = stdout_is_terminal();
  const bool json = c.output.empty() ? !tty : c.output == "json";
  const bool progress_line = ::isatty(STDERR_FILENO) == 1;
  const std::string mode_name(to_string(o.mode));
  const auto progress = [&](const ProbeProgress& p) {
    char elapsed[32];
    std::snprintf(elapsed, sizeof elapsed, "%.1fs", std::chrono::duration<double>(p.elapsed).count());
    std::cerr << "\r\033[Kprobe " << mode_name << " " << o.target << ": " << p.finished << "/" << p.total << " done, "
              << p.started - p.finished << " open, " << p.closed_by_node << " closed by the node, " << elapsed
              << std::flush;
  };

  ProbeReport report;
  try {
    report = run_probe(o, progress_line ? std::function<void(const ProbeProgress&)>(progress) : nullptr);
  } catch (const std::invalid_argument& e) {
    if (progress_line) std::cerr << "\r\033[K";
    std::cerr << "zctl probe: " << e.what() << "\n";
    return kExitUsage;
  }
  if (progress_line) std::cerr << "\r\033[K" << std::flush;

  if (json) {
    std::cout << probe_report_json(report) << "\n";
  } else if (!report.unreachable()) {
    print_table(report, tty && ::getenv("NO_COLOR") == nullptr);
  }
  std::cout.flush();
  if (report.unreachable()) {
    std::string why = report.error;
    if (why.empty()) {
      why = "no connection could be opened";
      size_t most = 0;
      for (const auto& [error, count] : report.errors) {
        if (count > most) why = error + " (" + std::to_string(count) + " of " + std::to_string(report.attempted) + ")";
        most = std::max(most, count);
      }
    }
    std::cerr << "zctl probe: cannot reach " << o.target << ": " << why << "\n";
    return kExitUnreachable;
  }
  return report.pass ? kExitOk : kExitCheckFailed;
}

}  // namespace

Runner register_probe(CLI::App& app) {
  auto o = std::make_shared<ProbeCliOptions>();
  auto* cmd = app.add_subcommand("probe", "Test how a node's mesh port treats connections that stop early");
  cmd->footer(
      "Modes (each connection stops at one step of the handshake, see zctl-protocol(7)):\n"
      "  idle         TCP connect, send nothing              node closes at its grace period\n"
      "  tls          TLS handshake, send nothing            node closes at its grace period\n"
      "  hello        hello, read hello_ack, never join      node closes at its grace period\n"
      "  partial      half a hello frame, then stall         node closes at its grace period\n"
      "  bad-magic    a frame with magic \"ZCTX\"              node replies versions, closes at once\n"
      "  bad-version  a frame with version 2                 node replies versions, closes at once\n"
      "  oversize     a header announcing 0x7FFFFFF0 bytes   node replies rejected frame_too_large, closes\n"
      "  garbage      64 random bytes (--seed)               node replies versions, closes at once\n"
      "  join         hello, then join                       node replies accepted (reports latency)\n\n"
      "Verdict: grace-period modes pass when the node closed every connection between --expect-grace and\n"
      "--expect-grace + --tolerance after TCP connect; immediate modes when it closed every one within\n"
      "--tolerance with the expected reply; join when every join was accepted.\n"
      "TLS: --tls wraps any mode in TLS. The node's certificate is verified only with --ca-file (and not\n"
      "--insecure); without --ca-file it is not verified.\n\n"
      "Exit status: 0 pass, 1 fail, 2 usage error, 3 no connection could be opened.\n\n"
      "Examples:\n"
      "  zctl probe 127.0.0.1:6262                                   one idle connection, 30s grace\n"
      "  zctl probe 127.0.0.1:6262 --expect-grace 5s --connections 100\n"
      "  zctl probe 10.0.0.1:6262 --mode bad-magic --connections 50 -o json\n"
      "  zctl probe 10.0.0.1:6262 --mode tls --ca-file ca.pem --cert-file probe.pem --key-file probe.key\n"
      "  zctl probe 10.0.0.1:6262 --mode join --cluster-id prod --token-file /etc/zctl/join-token");
  cmd->add_option("TARGET", o->target, "HOST:PORT of the node's mesh port, e.g. 127.0.0.1:6262")->required();
  std::vector<std::string> modes;
  for (ProbeMode m : all_probe_modes()) modes.emplace_back(to_string(m));
  cmd->add_option("--mode", o->mode, "Where each connection stops: " + CLI::detail::join(modes, ", "))
      ->check(CLI::IsMember(modes))
      ->capture_default_str();
  cmd->add_option("--connections", o->connections, "Connections to open in all (at most 1000000)")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}))
      ->capture_default_str();
  cmd->add_option("--concurrency", o->concurrency,
                  "Connections open at the same time (default: min(connections, 256); 1 for join)")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}));
  cmd->add_option("--expect-grace", o->expect_grace, "The node's grace period (mesh.stray.grace_period)")
      ->capture_default_str();
  cmd->add_option("--tolerance", o->tolerance, "How much later than expected a close may come")->capture_default_str();
  cmd->add_option("--timeout", o->timeout,
                  "Give up on a connection this long after connect (default: expect-grace + tolerance + 5s)");
  cmd->add_option("-o,--output", o->output, "table (default on a terminal) or json (one object)")
      ->check(CLI::IsMember({"table", "json"}));
  cmd->add_option("--node-id", o->node_id, "Node id sent in hello")->capture_default_str();
  cmd->add_option("--cluster-id", o->cluster_id, "Cluster id sent in hello (the node's cluster.id)")
      ->capture_default_str();
  cmd->add_option("--token-file", o->token_file, "File holding the join token (trailing newline stripped)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--raft-addr", o->raft_addr, "Raft address sent in join")->capture_default_str();
  cmd->add_flag("--tls", o->tls, "Wrap every connection in TLS (implied by --mode tls)");
  cmd->add_option("--ca-file", o->ca_file, "Verify the node's certificate against these CAs (PEM)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--cert-file", o->cert_file, "Client certificate (PEM), for nodes that require one")
      ->check(CLI::ExistingFile);
  cmd->add_option("--key-file", o->key_file, "Private key of --cert-file (PEM)")->check(CLI::ExistingFile);
  cmd->add_option("--server-name", o->server_name, "Name sent as SNI and verified (default: the HOST of TARGET)");
  cmd->add_flag("--insecure", o->insecure, "Do not verify the node's certificate, even with --ca-file");
  cmd->add_option("--seed", o->seed, "garbage: connection i sends the random bytes of seed + i")->capture_default_str();
  return [o] { return run_probe_command(*o); };
}

}  // namespace zctl::cli
