// `zctl probe`: tests a node's mesh port from outside. Each connection stops
// at a chosen step of the handshake (man/zctl-protocol.7) and the probe
// measures how the node reacts: when it closes, what it replies.
//
// run_probe() does the network part (one io_context, run on the calling
// thread; one session object per connection with its own deadline; at most
// `concurrency` connections in flight, the soft RLIMIT_NOFILE raised for
// them). Everything else -- the bytes each mode
// sends, the reply each mode expects, percentiles, the verdict -- is a pure
// function here, tested without sockets.
//
// Errors: bad options throw std::invalid_argument from validate_probe_options()
// and run_probe() (a usage error); everything the network does is reported in
// the ProbeReport, never thrown.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zctl {

using ProbeDuration = std::chrono::microseconds;

enum class ProbeMode {
  idle,         // TCP connect, send nothing
  tls,          // TLS handshake, send nothing
  hello,        // hello, read hello_ack, never join
  partial,      // the first half of a hello frame, then stall
  bad_magic,    // a hello frame whose magic is "ZCTX"
  bad_version,  // a hello frame with version 2 in its header
  oversize,     // a header announcing a body of 0x7FFFFFF0 bytes
  garbage,      // 64 seeded random bytes
  join,         // hello -> hello_ack -> join -> accepted | rejected | redirect
};

// "idle", "bad-magic", ... as on the command line.
std::string_view to_string(ProbeMode mode);
std::optional<ProbeMode> parse_probe_mode(std::string_view name);
// Every mode, in the order above.
const std::vector<ProbeMode>& all_probe_modes();

// stalling: the node should close at its grace period (idle, tls, hello, partial);
// immediate: the node should close at once (bad-magic, bad-version, oversize, garbage);
// join: the node should answer accepted.
enum class ProbeKind { stalling, immediate, join };
ProbeKind kind_of(ProbeMode mode);

struct ProbeOptions {
  std::string target;  // HOST:PORT of the node's mesh port; [v6]:PORT; a host name is resolved once
  ProbeMode mode = ProbeMode::idle;
  size_t connections = 1;  // 1 to 1000000
  size_t concurrency = 0;  // 0: min(connections, 256); for join 1 (one node id, one joined session at a time)
  std::chrono::milliseconds expect_grace{std::chrono::seconds(30)};
  std::chrono::milliseconds tolerance{std::chrono::seconds(1)};
  std::optional<std::chrono::milliseconds> timeout;  // unset: expect_grace + tolerance + 5s

  // What hello and join carry.
  std::string node_id = "zctl-probe";
  std::string cluster_id = "zctl";
  std::string raft_addr = "127.0.0.1:1";
  std::string token;  // the join token, empty for none

  // TLS: `tls` wraps every mode in TLS (mode tls implies it). The server
  // certificate is verified only when ca_file is set and insecure is not.
  bool tls = false;
  std::string ca_file;      // PEM CA bundle to verify the node's certificate with
  std::string cert_file;    // PEM client certificate (chain), with key_file
  std::string key_file;     // PEM private key of cert_file
  std::string server_name;  // SNI and the name verified; empty: the HOST of target
  bool insecure = false;    // never verify the server certificate

  uint64_t seed = 1;  // garbage: connection i sends the bytes of seed + i
};

// The defaults filled in: concurrency and timeout set, tls set for mode tls.
// Throws std::invalid_argument naming the option when a value cannot work: no
// connections, an id or address hello/join cannot carry, a key without a
// certificate, a timeout that ends before the expected close window.
ProbeOptions validate_probe_options(ProbeOptions options);

// The bytes connection `index` sends right after connecting (after the TLS
// handshake): empty for idle and tls, the hello frame for hello and join,
// and the broken streams of partial, bad-magic, bad-version, oversize and
// garbage. `options` must be valid.
std::string probe_payload(const ProbeOptions& options, size_t index);

// The reply label connection `index` must receive for the verdict, "" when
// none is required: "hello_ack" for hello, "accepted" for join, and for the
// broken streams whatever a node following the protocol answers to those
// bytes (found by running them through the node's own frame parser):
// "versions" for bad-magic, bad-version and almost all garbage,
// "rejected:frame_too_large" for oversize.
std::string expected_reply(const ProbeOptions& options, size_t index);

// What the node sent on one connection, decoded. Labels: "hello_ack",
// "accepted", "versions", "rejected:<reason>", "redirect", "heartbeat",
// "heartbeat_ack", or "invalid" when the bytes are not valid frames.
struct NodeReplies {
  std::vector<std::string> labels;  // in the order received
  std::vector<uint8_t> versions;    // listed by a versions reply
  std::string detail;               // rejected detail, or "leader ID at ADDR" of a redirect
  std::string invalid;              // why the bytes are not valid frames, when they are not
};
// Decodes a complete byte stream from a node (pure; the sessions decode the
// same way as bytes arrive).
NodeReplies classify_replies(std::string_view stream);

// One connection's story.
struct ConnectionResult {
  size_t index = 0;
  bool connected = false;  // TCP connect completed
  bool refused = false;    // connect failed with connection refused
  std::string error;       // what failed on our side: connect, TLS handshake, an invalid reply; empty if nothing
  // TCP connect start -> completion (as seen here: it includes any delay in
  // handling the completion). The node accepted the connection somewhere in
  // this span, so a close is only early when it came less than expect_grace
  // after the connect *started*.
  std::optional<ProbeDuration> connect_time;
  bool closed_by_node = false;
  std::string close_reason;                    // "eof", "reset" or the error seen when the node closed
  std::optional<ProbeDuration> time_to_close;  // TCP connect completion -> close seen
  std::optional<ProbeDuration> latency;        // join: TCP connect completion -> final answer received
  bool timed_out = false;                      // still open at the timeout; the probe closed it
  NodeReplies replies;
  std::string expected_reply;  // from expected_reply(); "" for none
};

// Nearest-rank percentile of ascending `sorted`: the value at rank
// ceil(p / 100 * n), counted from 1 (p50 of 1..100 is 50, p99 is 99).
// `sorted` must not be empty; p is in (0, 100].
ProbeDuration percentile(const std::vector<ProbeDuration>& sorted, double p);

struct DurationSummary {
  size_t count = 0;  // values summarised; the others are 0 when count is 0
  ProbeDuration min{0};
  ProbeDuration p50{0};
  ProbeDuration p99{0};
  ProbeDuration max{0};
};
DurationSummary summarize_durations(std::vector<ProbeDuration> values);

struct ProbeReport {
  ProbeOptions options;  // validated: concurrency and timeout filled in
  std::string endpoint;  // the address connected to, e.g. "127.0.0.1:6262"
  std::string error;     // the probe could not start at all (the host did not resolve); nothing was measured

  size_t attempted = 0;       // connections started
  size_t opened = 0;          // TCP connect completed
  size_t connect_failed = 0;  // attempted - opened
  size_t refused = 0;         // of connect_failed: connection refused
  size_t closed_by_node = 0;
  size_t timed_out = 0;  // still open at the timeout, closed by the probe
  size_t early = 0;      // stalling modes: closed less than expect_grace after the TCP connect started
  size_t late = 0;       // closed after the window: stalling after expect_grace + tolerance, immediate after tolerance

  std::map<std::string, size_t> close_reasons;  // ConnectionResult::close_reason -> connections the node closed

  // Connections that received each label at least once; "none" counts
  // connections that were opened and received nothing.
  std::map<std::string, size_t> replies;
  std::vector<uint8_t> versions;         // every version listed in versions replies, ascending
  std::map<std::string, size_t> errors;  // ConnectionResult::error -> connections
  std::vector<std::string> details;      // distinct rejected details and redirects, at most 5

  // Time to close for stalling and immediate modes (connections the node
  // closed); for join, the handshake latency (connections that got an answer).
  DurationSummary times;
  bool measures_latency = false;  // times are join latencies
  DurationSummary connect_times;  // TCP connect, start to completion, of the connections opened

  bool pass = false;
  std::vector<std::string> failures;  // why the verdict failed, one sentence each

  ProbeDuration elapsed{0};  // wall time of the whole run

  // No connection could be opened: exit status 3.
  bool unreachable() const { return !error.empty() || (attempted > 0 && opened == 0); }
};

// Counts, statistics and the verdict from the per-connection results
// (pure: run_probe() calls it at the end; tests call it with made-up
// results). `options` must be validated.
//   stalling:  every connection closed by the node within
//              [expect_grace, expect_grace + tolerance] of its TCP connect
//              (early: measured from when the connect started; late: from
//              when it completed), and got the expected reply (hello_ack
//              for hello);
//   immediate: every connection closed by the node within tolerance and got
//              the expected reply;
//   join:      every connection got accepted.
// A connection that failed to connect, failed its TLS handshake or received
// invalid frames fails every mode.
ProbeReport summarize_probe(const ProbeOptions& options, const std::vector<ConnectionResult>& results);

// For a progress line; all counts are connections.
struct ProbeProgress {
  size_t total = 0;
  size_t started = 0;
  size_t connected = 0;
  size_t closed_by_node = 0;
  size_t finished = 0;
  ProbeDuration elapsed{0};
};

// Runs the probe and blocks until every connection has finished. Calls
// `progress` on this thread about four times a second and once at the end.
// Throws std::invalid_argument for invalid options (validate_probe_options)
// or TLS files that cannot be loaded.
ProbeReport run_probe(const ProbeOptions& options, const std::function<void(const ProbeProgress&)>& progress = {});

// The report as one JSON object (fields in man/zctl-probe.1), no newline.
std::string probe_report_json(const ProbeReport& report);

// "850us", "12.3ms", "30.002s": for tables and messages.
std::string format_probe_duration(ProbeDuration d);

}  // namespace zctl
