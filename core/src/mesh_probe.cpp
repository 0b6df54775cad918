#include "zctl/core/probe.hpp"
#include "report_json.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <utility>

#include "descriptor_budget.hpp"
#include "mesh_protocol.hpp"

namespace zctl {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

// The peer ended the connection: TCP FIN, TCP RST, or TLS without close_notify
// (OpenSSL 3 reports that as "unexpected eof while reading", which this
// Boost version does not map to stream_truncated).
bool is_eof(const error_code& ec) {
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated) return true;
  return ec.category() == asio::error::get_ssl_category() &&
         ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

constexpr size_t kDefaultMaxConcurrency = 256;
constexpr size_t kMaxConnections = 1'000'000;            // every result is kept until the summary
constexpr auto kTimeoutSlack = std::chrono::seconds(5);  // default timeout: grace + tolerance + this
constexpr size_t kGarbageBytes = 64;
constexpr uint32_t kOversizeLength = 0x7FFFFFF0;
// Replies can be larger than a node accepts from a client: an accepted with
// 256 members of maximal addresses is about 200 KiB.
constexpr uint32_t kReplyMaxFrameBytes = 1u << 20;
constexpr auto kProgressInterval = std::chrono::milliseconds(250);
// Connects issued per turn of the io loop. Thousands issued in one go kept
// the first connections' completions and closes waiting behind the last
// connect: all were stamped together, seconds late, and a time to close
// came out near zero.
constexpr size_t kConnectsPerTurn = 32;
// Linux's first SYN retransmission: a connect that took this long had its
// SYN dropped, which a listener does when its accept queue is full.
constexpr auto kSynRetransmitTime = std::chrono::seconds(1);
// Descriptors the probe keeps for itself, besides one per connection in flight.
constexpr size_t kOwnDescriptors = 64;
constexpr size_t kMaxDetails = 5;
constexpr auto kLeaveWait = std::chrono::seconds(2);  // join: how long to wait for the node to close a joined session

struct ModeName {
  ProbeMode mode;
  std::string_view name;
};
constexpr std::array<ModeName, 9> kModeNames = {{
    {ProbeMode::idle, "idle"},
    {ProbeMode::tls, "tls"},
    {ProbeMode::hello, "hello"},
    {ProbeMode::partial, "partial"},
    {ProbeMode::bad_magic, "bad-magic"},
    {ProbeMode::bad_version, "bad-version"},
    {ProbeMode::oversize, "oversize"},
    {ProbeMode::garbage, "garbage"},
    {ProbeMode::join, "join"},
}};

// "host", "port" from HOST:PORT or [v6]:PORT.
std::pair<std::string, std::string> split_target(const std::string& target) {
  const size_t colon = target.rfind(':');
  if (target.empty() || colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
    throw std::invalid_argument("'" + target + "' is not HOST:PORT");
  }
  std::string host = target.substr(0, colon);
  std::string port = target.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') throw std::invalid_argument("'" + target + "' is not HOST:PORT");
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    throw std::invalid_argument("'" + target + "': an IPv6 address goes in brackets, [" + host + "]:" + port);
  }
  const bool digits = std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    throw std::invalid_argument("'" + target + "': the port must be a number from 1 to 65535");
  }
  return {host, port};
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string hello_frame(const ProbeOptions& o, uint8_t version = mesh::kLowestVersion) {
  return mesh::encode(mesh::Hello{version, version, o.node_id, o.cluster_id}, version);
}

// splitmix64: a tiny generator whose output is the same on every platform
// and standard library, so a seed names the same bytes everywhere.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::string label_of(const mesh::Message& message) {
  if (const auto* rejected = std::get_if<mesh::Rejected>(&message)) return "rejected:" + rejected->reason;
  return std::string(mesh::to_string(mesh::type_of(message)));
}

// Decodes what a node sends, as it arrives, into NodeReplies.
class ReplyReader {
 public:
  // Decodes `bytes`, recording each message and handing it to `on_frame`
  // (when set); stops, dropping the rest, when on_frame returns false.
  void feed(std::string_view bytes, const std::function<bool(const mesh::Message&)>& on_frame = {}) {
    if (parser_.failed()) return;
    while (!bytes.empty()) {
      mesh::ParseResult r = parser_.feed(bytes);
      bytes.remove_prefix(r.consumed);
      if (r.failed()) {
        invalid(r.error);
        return;
      }
      if (!r.has_frame()) return;
      add(r.frame.message);
      if (on_frame && !on_frame(r.frame.message)) return;
    }
  }

  // The node closed the connection.
  void finish() {
    if (parser_.failed()) return;
    if (auto error = parser_.finish()) invalid(*error);
  }

  const NodeReplies& replies() const { return replies_; }

 private:
  void add(const mesh::Message& message) {
    replies_.labels.push_back(label_of(message));
    if (const auto* v = std::get_if<mesh::Versions>(&message)) {
      replies_.versions = v->versions;
    } else if (const auto* rejected = std::get_if<mesh::Rejected>(&message)) {
      if (!rejected->detail.empty()) replies_.detail = rejected->detail;
    } else if (const auto* redirect = std::get_if<mesh::Redirect>(&message)) {
      replies_.detail = "leader " + redirect->leader_id + " at " + redirect->leader_mesh_addr;
    }
  }

  void invalid(const mesh::FrameError& error) {
    replies_.labels.emplace_back("invalid");
    replies_.invalid = std::string(mesh::to_string(error.error)) + " at offset " + std::to_string(error.offset) +
                       (error.detail.empty() ? "" : ": " + error.detail);
  }

  mesh::FrameParser parser_{kReplyMaxFrameBytes};
  NodeReplies replies_;
};

// ---- the network part ---------------------------------------------------------

class ProbeRun;

// One connection, from connect to close, with its own deadline. Lives in
// shared_ptrs held by its pending handlers; reports to the run once.
class ProbeSession : public std::enable_shared_from_this<ProbeSession> {
 public:
  ProbeSession(ProbeRun& run, size_t index);
  void start();

 private:
  void on_connect(const error_code& ec);
  void on_handshake(const error_code& ec);
  void exchange();
  void read();
  void on_read(const error_code& ec, size_t n);
  void on_frame(const mesh::Message& message);
  void send(std::string bytes);
  void write_next();
  void arm_deadline(Clock::time_point at);
  void on_deadline(const error_code& ec);
  void finish();

  ProbeRun& run_;
  const ProbeOptions& options_;
  tcp::socket socket_;
  std::unique_ptr<ssl::stream<tcp::socket&>> tls_;
  std::string tls_name_;  // SNI and the name the certificate must carry
  asio::steady_timer deadline_;
  Clock::time_point connect_started_;
  Clock::time_point connected_at_;
  ConnectionResult result_;
  ReplyReader reader_;
  std::array<char, 4096> buffer_{};
  std::deque<std::string> outbox_;
  bool writing_ = false;
  bool join_sent_ = false;
  bool leaving_ = false;  // join: accepted, our side shut down, waiting for the node to close
  bool finished_ = false;
};

class ProbeRun {
 public:
  ProbeRun(const ProbeOptions& options, tcp::endpoint endpoint, ssl::context* tls,
           const std::function<void(const ProbeProgress&)>& progress)
      : options_(options),
        endpoint_(endpoint),
        tls_(tls),
        progress_(progress),
        progress_timer_(io_),
        results_(options.connections) {}

  asio::io_context& io() { return io_; }
  const ProbeOptions& options() const { return options_; }
  const tcp::endpoint& endpoint() const { return endpoint_; }
  ssl::context* tls() const { return tls_; }  // null without TLS

  std::vector<ConnectionResult> run() {
    started_at_ = Clock::now();
    launch();
    if (progress_) tick();
    io_.run();
    report_progress();
    return std::move(results_);
  }

  void connected() { ++progress_state_.connected; }
  void closed_by_node() { ++progress_state_.closed_by_node; }

  void done(ConnectionResult result) {
    const size_t index = result.index;
    results_[index] = std::move(result);
    --in_flight_;
    ++progress_state_.finished;
    launch();
    if (progress_state_.finished == options_.connections) progress_timer_.cancel();
  }

 private:
  void launch() {
    for (size_t i = 0; i < kConnectsPerTurn && can_launch(); ++i) {
      ++in_flight_;
      ++progress_state_.started;
      std::make_shared<ProbeSession>(*this, next_++)->start();
    }
    if (can_launch() && !launch_posted_) {
      launch_posted_ = true;  // the rest after the completions that are ready
      asio::post(io_, [this] {
        launch_posted_ = false;
        launch();
      });
    }
  }
  bool can_launch() const { return in_flight_ < options_.concurrency && next_ < options_.connections; }

  void tick() {
    // The timer may have fired just before the last connection finished
    // cancelled it: do not keep the io_context alive after that.
    if (progress_state_.finished == options_.connections) return;
    report_progress();
    progress_timer_.expires_after(kProgressInterval);
    progress_timer_.async_wait([this](const error_code& ec) {
      if (!ec) tick();
    });
  }

  void report_progress() {
    if (!progress_) return;
    progress_state_.total = options_.connections;
    progress_state_.elapsed = std::chrono::duration_cast<ProbeDuration>(Clock::now() - started_at_);
    progress_(progress_state_);
  }

  asio::io_context io_;
  const ProbeOptions& options_;
  const tcp::endpoint endpoint_;
  ssl::context* const tls_;
  const std::function<void(const ProbeProgress&)>& progress_;
  asio::steady_timer progress_timer_;
  std::vector<ConnectionResult> results_;
  ProbeProgress progress_state_;
  Clock::time_point started_at_;
  size_t next_ = 0;
  size_t in_flight_ = 0;
  bool launch_posted_ = false;
};

ProbeSession::ProbeSession(ProbeRun& run, size_t index)
    : run_(run), options_(run.options()), socket_(run.io()), deadline_(run.io()) {
  result_.index = index;
  result_.expected_reply = expected_reply(options_, index);
}

void ProbeSession::start() {
  // Until connected, the timeout bounds the TCP connect (and then restarts).
  // The connect syscall is made inside async_connect, so this is before the
  // node can have accepted the connection.
  connect_started_ = Clock::now();
  arm_deadline(connect_started_ + *options_.timeout);
  socket_.async_connect(run_.endpoint(), [self = shared_from_this()](const error_code& ec) { self->on_connect(ec); });
}

void ProbeSession::arm_deadline(Clock::time_point at) {
  deadline_.expires_at(at);  // cancels a pending wait: its handler sees operation_aborted
  deadline_.async_wait([self = shared_from_this()](const error_code& ec) { self->on_deadline(ec); });
}

void ProbeSession::on_deadline(const error_code& ec) {
  if (ec == asio::error::operation_aborted || finished_) return;
  if (leaving_) {
    // The node did not notice the hang-up in time; the join was measured anyway.
  } else if (!result_.connected) {
    result_.error = "connect: no answer within " + format_probe_duration(*options_.timeout);
  } else {
    result_.timed_out = true;
  }
  finish();
}

void ProbeSession::on_connect(const error_code& ec) {
  if (finished_) return;
  if (ec) {
    result_.refused = ec == asio::error::connection_refused;
    result_.error = "connect: " + ec.message();
    finish();
    return;
  }
  connected_at_ = Clock::now();
  result_.connected = true;
  result_.connect_time = std::chrono::duration_cast<ProbeDuration>(connected_at_ - connect_started_);
  run_.connected();
  arm_deadline(connected_at_ + *options_.timeout);
  error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  if (run_.tls() == nullptr) {
    exchange();
    return;
  }
  tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, *run_.tls());
  tls_name_ = options_.server_name.empty() ? split_target(options_.target).first : options_.server_name;
  const std::string& name = tls_name_;
  if (!is_ip_literal(name)) SSL_set_tlsext_host_name(tls_->native_handle(), name.c_str());
  if (!options_.ca_file.empty() && !options_.insecure) {
    tls_->set_verify_callback([name](bool preverified, ssl::verify_context& context) {
      const bool ok = ssl::host_name_verification(name)(preverified, context);
      // Say why, instead of OpenSSL's "unspecified certificate verification error".
      if (preverified && !ok) X509_STORE_CTX_set_error(context.native_handle(), X509_V_ERR_HOSTNAME_MISMATCH);
      return ok;
    });
  }
  tls_->async_handshake(ssl::stream_base::client,
                        [self = shared_from_this()](const error_code& hec) { self->on_handshake(hec); });
}

void ProbeSession::on_handshake(const error_code& ec) {
  if (finished_) return;
  if (ec) {
    std::string message = ec.message();
    if (is_eof(ec) || ec == asio::error::connection_reset) {
      message = "the node closed the connection";
    }
    if (ec.category() == asio::error::get_ssl_category() &&
        ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_WRONG_VERSION_NUMBER) {
      message += " (the node does not seem to speak TLS on this port)";
    }
    if (const long verify = SSL_get_verify_result(tls_->native_handle()); verify != X509_V_OK) {
      message += std::string(" (") + X509_verify_cert_error_string(verify);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH) message += ": the certificate does not name " + tls_name_;
      message += ")";
    }
    result_.error = "TLS handshake: " + message;
    finish();
    return;
  }
  exchange();
}

void ProbeSession::exchange() {
  read();
  std::string payload = probe_payload(options_, result_.index);
  if (!payload.empty()) send(std::move(payload));
}

void ProbeSession::send(std::string bytes) {
  outbox_.push_back(std::move(bytes));
  if (!writing_) write_next();
}

void ProbeSession::write_next() {
  if (outbox_.empty() || finished_) {
    writing_ = false;
    return;
  }
  writing_ = true;
  auto handler = [self = shared_from_this()](const error_code& ec, size_t) {
    self->outbox_.pop_front();
    // A failed write means the node has closed or reset the connection; the
    // pending read reports that with its time.
    if (ec) {
      self->writing_ = false;
      return;
    }
    self->write_next();
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(outbox_.front()), std::move(handler));
  } else {
    asio::async_write(socket_, asio::buffer(outbox_.front()), std::move(handler));
  }
}

void ProbeSession::read() {
  auto handler = [self = shared_from_this()](const error_code& ec, size_t n) { self->on_read(ec, n); };
  if (tls_) {
    tls_->async_read_some(asio::buffer(buffer_), std::move(handler));
  } else {
    socket_.async_read_some(asio::buffer(buffer_), std::move(handler));
  }
}

void ProbeSession::on_read(const error_code& ec, size_t n) {
  if (finished_) return;
  if (leaving_) {
    // Heartbeats of the joined session are not replies to the probe.
    if (ec) {
      finish();
    } else {
      read();
    }
    return;
  }
  if (ec) {
    // The node closed the connection (or reset it, or ended TLS): the
    // moment this run is about.
    result_.closed_by_node = true;
    result_.time_to_close = std::chrono::duration_cast<ProbeDuration>(Clock::now() - connected_at_);
    if (is_eof(ec)) {
      result_.close_reason = "eof";
    } else if (ec == asio::error::connection_reset) {
      result_.close_reason = "reset";
    } else {
      result_.close_reason = ec.message();
    }
    run_.closed_by_node();
    reader_.finish();
    finish();
    return;
  }
  reader_.feed(std::string_view(buffer_.data(), n), [this](const mesh::Message& message) {
    on_frame(message);
    return !finished_ && !leaving_;
  });
  if (!finished_) read();
}

void ProbeSession::on_frame(const mesh::Message& message) {
  if (options_.mode != ProbeMode::join) return;  // other modes only listen until the node closes
  const mesh::MessageType type = mesh::type_of(message);
  if (type == mesh::MessageType::hello_ack && !join_sent_) {
    join_sent_ = true;
    const auto& ack = std::get<mesh::HelloAck>(message);
    send(mesh::encode(mesh::Join{options_.raft_addr, options_.token}, ack.version));
  } else if (type == mesh::MessageType::accepted || type == mesh::MessageType::rejected ||
             type == mesh::MessageType::redirect) {
    const auto now = Clock::now();
    result_.latency = std::chrono::duration_cast<ProbeDuration>(now - connected_at_);
    if (type != mesh::MessageType::accepted) {
      finish();  // the node closes after rejected and redirect anyway
      return;
    }
    // A joined session: hang up and wait (briefly) until the node has closed
    // it too, so that the next join with the same node id is not refused as
    // duplicate_id because this session still looks alive on the node.
    leaving_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    arm_deadline(std::min(deadline_.expiry(), now + kLeaveWait));
  }
}

void ProbeSession::finish() {
  if (finished_) return;
  finished_ = true;
  result_.replies = reader_.replies();
  if (!result_.replies.invalid.empty() && result_.error.empty()) {
    result_.error = "invalid reply from the node: " + result_.replies.invalid;
  }
  error_code ignored;
  deadline_.cancel();
  socket_.close(ignored);  // pending operations complete with operation_aborted
  run_.done(std::move(result_));
}

// ---- JSON ---------------------------------------------------------------------

using JsonWriter = report_json::Writer;
constexpr auto json_key = report_json::key;
constexpr auto json_string = report_json::string;
constexpr auto json_summary = report_json::summary;
void json_ms(JsonWriter& w, ProbeDuration d) { report_json::ms(w, d); }
void json_ms(JsonWriter& w, std::chrono::milliseconds d) { w.Uint64(static_cast<uint64_t>(d.count())); }
void json_counts(JsonWriter& w, const std::map<std::string, size_t>& counts) {
  w.StartObject();
  for (const auto& [key, count] : counts) {
    json_key(w, key);
    w.Uint64(count);
  }
  w.EndObject();
}

std::string count_of(size_t n, size_t total, std::string_view noun) {
  return std::to_string(n) + " of " + std::to_string(total) + " " + std::string(noun) + (total == 1 ? "" : "s");
}

// The most frequent key of `counts` (the first on ties).
std::string most_common(const std::map<std::string, size_t>& counts) {
  std::string best;
  size_t best_count = 0;
  for (const auto& [key, count] : counts) {
    if (count > best_count) best = key, best_count = count;
  }
  return best;
}

}  // namespace

// ---- public functions -------------------------------------------------------------

std::string_view to_string(ProbeMode mode) {
  for (const auto& m : kModeNames) {
    if (m.mode == mode) return m.name;
  }
  return "unknown";
}

std::optional<ProbeMode> parse_probe_mode(std::string_view name) {
  for (const auto& m : kModeNames) {
    if (m.name == name) return m.mode;
  }
  return std::nullopt;
}

const std::vector<ProbeMode>& all_probe_modes() {
  static const std::vector<ProbeMode> modes = [] {
    std::vector<ProbeMode> all;
    for (const auto& m : kModeNames) all.push_back(m.mode);
    return all;
  }();
  return modes;
}

ProbeKind kind_of(ProbeMode mode) {
  switch (mode) {
    case ProbeMode::idle:
    case ProbeMode::tls:
    case ProbeMode::hello:
    case ProbeMode::partial:
      return ProbeKind::stalling;
    case ProbeMode::bad_magic:
    case ProbeMode::bad_version:
    case ProbeMode::oversize:
    case ProbeMode::garbage:
      return ProbeKind::immediate;
    case ProbeMode::join:
      return ProbeKind::join;
  }
  return ProbeKind::stalling;
}

ProbeOptions validate_probe_options(ProbeOptions o) {
  split_target(o.target);  // throws when it is not HOST:PORT
  if (o.connections == 0 || o.connections > kMaxConnections) {
    throw std::invalid_argument("--connections must be 1 to " + std::to_string(kMaxConnections));
  }
  // Joins default to one at a time: a node refuses a second joined session
  // for the same node id (duplicate_id), and every join uses --node-id.
  if (o.concurrency == 0)
    o.concurrency = o.mode == ProbeMode::join ? 1 : std::min(o.connections, kDefaultMaxConcurrency);
  o.concurrency = std::min(o.concurrency, o.connections);
  if (o.expect_grace.count() < 0 || o.tolerance.count() < 0) {
    throw std::invalid_argument("--expect-grace and --tolerance cannot be negative");
  }
  const ProbeKind kind = kind_of(o.mode);
  if (!o.timeout) o.timeout = o.expect_grace + o.tolerance + kTimeoutSlack;
  if (o.timeout->count() <= 0) throw std::invalid_argument("--timeout must be longer than 0s");
  const auto window_end = kind == ProbeKind::stalling ? o.expect_grace + o.tolerance : o.tolerance;
  if (kind != ProbeKind::join && *o.timeout < window_end) {
    throw std::invalid_argument("--timeout " + format_probe_duration(*o.timeout) +
                                " ends before the close window does (" + format_probe_duration(window_end) +
                                " after connect): no connection could pass");
  }

  // Whatever hello and join will carry must be encodable.
  const auto check = [](const char* option, const auto& message) {
    try {
      mesh::encode(message);
    } catch (const std::invalid_argument& e) {
      // "mesh encode: hello.node_id: PROBLEM" -> "--node-id: PROBLEM"
      const std::string what = e.what();
      const size_t field = what.find(": ");
      const size_t problem = field == std::string::npos ? field : what.find(": ", field + 2);
      throw std::invalid_argument(std::string(option) + ": " +
                                  (problem == std::string::npos ? what : what.substr(problem + 2)));
    }
  };
  check("--node-id", mesh::Hello{1, 1, o.node_id, "x"});
  check("--cluster-id", mesh::Hello{1, 1, "x", o.cluster_id});
  check("--raft-addr", mesh::Join{o.raft_addr, ""});
  check("--token-file", mesh::Join{"x:1", o.token});

  if (o.mode == ProbeMode::tls) o.tls = true;
  if (!o.tls) {
    if (!o.ca_file.empty() || !o.cert_file.empty() || !o.key_file.empty() || !o.server_name.empty() || o.insecure) {
      throw std::invalid_argument(
          "--ca-file, --cert-file, --key-file, --server-name and --insecure need --tls (or --mode tls)");
    }
  }
  if (o.cert_file.empty() != o.key_file.empty()) {
    throw std::invalid_argument("--cert-file and --key-file go together");
  }
  return o;
}

std::string probe_payload(const ProbeOptions& o, size_t index) {
  switch (o.mode) {
    case ProbeMode::idle:
    case ProbeMode::tls:
      return {};
    case ProbeMode::hello:
    case ProbeMode::join:
      return hello_frame(o);
    case ProbeMode::partial: {
      const std::string hello = hello_frame(o);
      return hello.substr(0, hello.size() / 2);
    }
    case ProbeMode::bad_magic: {
      std::string frame = hello_frame(o);
      frame[3] = 'X';  // "ZCTX": wrong at the last magic byte, so a node must check all four
      return frame;
    }
    case ProbeMode::bad_version:
      return hello_frame(o, 2);  // offers version 2 only, with 2 in the header
    case ProbeMode::oversize: {
      std::string header = hello_frame(o).substr(0, mesh::kHeaderBytes);
      for (size_t i = 0; i < 4; ++i) header[8 + i] = static_cast<char>(kOversizeLength >> (24 - 8 * i));
      return header;  // the header only: a node must refuse before reading any body
    }
    case ProbeMode::garbage: {
      uint64_t state = o.seed + index;
      std::string bytes;
      bytes.reserve(kGarbageBytes);
      while (bytes.size() < kGarbageBytes) {
        const uint64_t word = splitmix64(state);
        for (int i = 0; i < 8 && bytes.size() < kGarbageBytes; ++i) bytes.push_back(static_cast<char>(word >> (8 * i)));
      }
      return bytes;
    }
  }
  return {};
}

std::string expected_reply(const ProbeOptions& o, size_t index) {
  switch (kind_of(o.mode)) {
    case ProbeKind::join:
      return "accepted";
    case ProbeKind::stalling:
      return o.mode == ProbeMode::hello ? "hello_ack" : "";
    case ProbeKind::immediate:
      break;
  }
  // What a node following the protocol replies is what its own parser
  // makes of these bytes.
  mesh::FrameParser parser;
  const std::string payload = probe_payload(o, index);
  std::string_view in = payload;
  while (!in.empty()) {
    mesh::ParseResult r = parser.feed(in);
    in.remove_prefix(r.consumed);
    if (r.failed()) {
      const auto reply = mesh::error_reply(r.error);
      return reply ? label_of(*reply) : "";
    }
    if (!r.has_frame()) break;
  }
  return {};
}

NodeReplies classify_replies(std::string_view stream) {
  ReplyReader reader;
  reader.feed(stream);
  reader.finish();
  return reader.replies();
}

ProbeDuration percentile(const std::vector<ProbeDuration>& sorted, double p) {
  if (sorted.empty()) throw std::invalid_argument("percentile of no values");
  const double n = static_cast<double>(sorted.size());
  // The small epsilon keeps p * n / 100 that is an integer in exact
  // arithmetic (99 * 100 / 100) from rounding up past it.
  auto rank = static_cast<size_t>(std::ceil(p / 100.0 * n - 1e-9));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

DurationSummary summarize_durations(std::vector<ProbeDuration> values) {
  DurationSummary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = values.size();
  s.min = values.front();
  s.p50 = percentile(values, 50);
  s.p99 = percentile(values, 99);
  s.max = values.back();
  return s;
}

ProbeReport summarize_probe(const ProbeOptions& options, const std::vector<ConnectionResult>& results) {
  ProbeReport report;
  report.options = options;
  const ProbeKind kind = kind_of(options.mode);
  report.measures_latency = kind == ProbeKind::join;
  const ProbeDuration grace = options.expect_grace;
  const ProbeDuration tolerance = options.tolerance;
  const ProbeDuration window_start = kind == ProbeKind::stalling ? grace : ProbeDuration(0);
  const ProbeDuration window_end = window_start + tolerance;

  std::vector<ProbeDuration> times;
  std::vector<ProbeDuration> connect_times;
  size_t slow_connects = 0;
  std::set<uint8_t> versions;
  std::map<std::string, size_t> connect_errors;
  std::map<std::string, size_t> session_errors;
  std::map<std::string, size_t> missing;       // expected reply -> connections without it
  std::map<std::string, size_t> instead;       // what those connections got: their first reply, or "none"
  std::map<std::string, size_t> join_answers;  // join: what the connections that were not accepted got
  std::map<std::string, size_t> early_reasons;
  std::optional<ProbeDuration> earliest_early;
  std::optional<ProbeDuration> latest_late;

  for (const ConnectionResult& r : results) {
    ++report.attempted;
    if (!r.error.empty()) ++report.errors[r.error];
    if (!r.connected) {
      ++report.connect_failed;
      if (r.refused) ++report.refused;
      ++connect_errors[r.error.empty() ? "connect failed" : r.error];
      continue;
    }
    ++report.opened;
    if (r.connect_time) {
      connect_times.push_back(*r.connect_time);
      if (*r.connect_time >= kSynRetransmitTime) ++slow_connects;
    }
    if (!r.error.empty()) ++session_errors[r.error];
    if (r.timed_out) ++report.timed_out;

    std::set<std::string> labels(r.replies.labels.begin(), r.replies.labels.end());
    for (const auto& label : labels) ++report.replies[label];
    if (labels.empty()) ++report.replies["none"];
    versions.insert(r.replies.versions.begin(), r.replies.versions.end());
    if (!r.replies.detail.empty() && report.details.size() < kMaxDetails &&
        std::find(report.details.begin(), report.details.end(), r.replies.detail) == report.details.end()) {
      report.details.push_back(r.replies.detail);
    }
    // A connection that failed on our side (a TLS handshake, say) is
    // already a failure; it is not also counted as a missing reply.
    const bool failed = !r.error.empty();
    if (!failed && !r.expected_reply.empty() && !labels.count(r.expected_reply)) {
      ++missing[r.expected_reply];
      ++instead[r.replies.labels.empty() ? "none" : r.replies.labels.front()];
    }

    if (kind == ProbeKind::join) {
      if (r.latency) times.push_back(*r.latency);
      if (!failed && !labels.count("accepted")) {
        std::string answer = "no answer";
        for (const auto& label : r.replies.labels) {
          if (label.rfind("rejected", 0) == 0 || label == "redirect" || label == "versions" || label == "invalid") {
            answer = label;
          }
        }
        ++join_answers[answer];
      }
    }
    if (r.closed_by_node) {
      ++report.closed_by_node;
      ++report.close_reasons[r.close_reason.empty() ? "eof" : r.close_reason];
      if (kind != ProbeKind::join && r.time_to_close) {
        const ProbeDuration t = *r.time_to_close;
        times.push_back(t);
        // The node accepted somewhere between connect start and completion:
        // early only if the close came before the grace period even from the start.
        if (t + r.connect_time.value_or(ProbeDuration(0)) < window_start) {
          ++report.early;
          ++early_reasons[r.close_reason];
          if (!earliest_early || t < *earliest_early) earliest_early = t;
        } else if (t > window_end) {
          ++report.late;
          if (!latest_late || t > *latest_late) latest_late = t;
        }
      }
    }
  }
  report.versions.assign(versions.begin(), versions.end());
  report.times = summarize_durations(std::move(times));
  report.connect_times = summarize_durations(std::move(connect_times));

  // The verdict: every failing rule gets one sentence.
  auto& f = report.failures;
  const size_t n = report.attempted;
  if (n == 0) f.emplace_back("no connection was attempted");
  if (report.connect_failed > 0) {
    f.push_back(count_of(report.connect_failed, n, "connection") + " could not be opened (" +
                most_common(connect_errors) + ")");
  }
  if (!session_errors.empty()) {
    size_t failed = 0;
    for (const auto& [error, count] : session_errors) failed += count;
    f.push_back(count_of(failed, n, "connection") + " failed: " + most_common(session_errors));
  }
  if (kind == ProbeKind::join) {
    size_t not_accepted = 0;
    std::string answers;
    for (const auto& [answer, count] : join_answers) {
      not_accepted += count;
      answers += (answers.empty() ? "" : ", ") + answer + " " + std::to_string(count);
    }
    if (not_accepted > 0) f.push_back(count_of(not_accepted, n, "join") + " not accepted: " + answers);
  } else {
    if (report.early > 0) {
      f.push_back(count_of(report.early, n, "connection") + " closed by the node too early: the first after " +
                  format_probe_duration(*earliest_early) + ", before the expected grace period of " +
                  format_probe_duration(grace));
      // A TLS alert says more than the time: a missing client certificate, say.
      const std::string reason = most_common(early_reasons);
      if (!reason.empty() && reason != "eof" && reason != "reset") f.back() += " (" + reason + ")";
    }
    if (report.late > 0) {
      f.push_back(count_of(report.late, n, "connection") + " closed by the node too late: the last after " +
                  format_probe_duration(*latest_late) + ", expected by " + format_probe_duration(window_end));
      // The node counts from its own end of the handshake. With its accept
      // queue full the kernel drops SYNs (seen here as slow connects) and
      // handshake ACKs (not seen here: this side is connected, the node's
      // is not until a retransmission), so closes come late by seconds.
      if (slow_connects > 0) {
        f.back() += "; " + count_of(slow_connects, n, "connect") +
                    " took 1s or more (a SYN retransmitted): the node's listen backlog was full, so its side of "
                    "the handshake may have completed later than this one; try a lower --concurrency";
      }
    }
    if (report.timed_out > 0) {
      f.push_back(count_of(report.timed_out, n, "connection") + " still open at the timeout of " +
                  format_probe_duration(*options.timeout) + ": the node did not close them");
    }
    std::string got;
    for (const auto& [label, count] : instead) got += (got.empty() ? "" : ", ") + label + " " + std::to_string(count);
    for (const auto& [label, count] : missing) {
      f.push_back(count_of(count, n, "connection") + " did not get the expected reply " + label + " (got " + got + ")");
    }
  }
  report.pass = f.empty();
  return report;
}

ProbeReport run_probe(const ProbeOptions& raw, const std::function<void(const ProbeProgress&)>& progress) {
  const ProbeOptions options = validate_probe_options(raw);
  raise_file_limit(options.concurrency + kOwnDescriptors);  // short of it: connect errors, EMFILE
  const auto started = Clock::now();

  std::optional<ssl::context> tls;
  if (options.tls) {
    tls.emplace(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION);
    error_code ec;
    if (!options.ca_file.empty() && !options.insecure) {
      tls->load_verify_file(options.ca_file, ec);
      if (ec) throw std::invalid_argument("--ca-file " + options.ca_file + ": " + ec.message());
      tls->set_verify_mode(ssl::verify_peer);
    } else {
      tls->set_verify_mode(ssl::verify_none);
    }
    if (!options.cert_file.empty()) {
      tls->use_certificate_chain_file(options.cert_file, ec);
      if (ec) throw std::invalid_argument("--cert-file " + options.cert_file + ": " + ec.message());
      tls->use_private_key_file(options.key_file, ssl::context::pem, ec);
      if (ec) throw std::invalid_argument("--key-file " + options.key_file + ": " + ec.message());
    }
  }

  // Resolve once; every connection goes to the same address. Of several,
  // the first IPv4 one (a node listening on 127.0.0.1 is reached as
  // localhost even where localhost resolves to ::1 first).
  const auto [host, port] = split_target(options.target);
  asio::io_context resolver_io;
  tcp::resolver resolver(resolver_io);
  error_code ec;
  const auto resolved = resolver.resolve(host, port, ec);
  if (ec || resolved.empty()) {
    ProbeReport report = summarize_probe(options, {});
    report.error = "cannot resolve " + host + ": " + (ec ? ec.message() : "no address");
    report.failures = {report.error};
    report.pass = false;
    return report;
  }
  tcp::endpoint endpoint = resolved.begin()->endpoint();
  for (const auto& entry : resolved) {
    if (entry.endpoint().address().is_v4()) {
      endpoint = entry.endpoint();
      break;
    }
  }

  ProbeRun run(options, endpoint, tls ? &*tls : nullptr, progress);
  ProbeReport report = summarize_probe(options, run.run());
  const auto ip = endpoint.address();
  report.endpoint = (ip.is_v6() ? "[" + ip.to_string() + "]" : ip.to_string()) + ":" + std::to_string(endpoint.port());
  report.elapsed = std::chrono::duration_cast<ProbeDuration>(Clock::now() - started);
  return report;
}

std::string probe_report_json(const ProbeReport& r) {
  const ProbeOptions& o = r.options;
  const ProbeKind kind = kind_of(o.mode);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  json_key(w, "target");
  json_string(w, o.target);
  json_key(w, "endpoint");
  json_string(w, r.endpoint);
  json_key(w, "mode");
  json_string(w, to_string(o.mode));
  json_key(w, "tls");
  w.Bool(o.tls);
  json_key(w, "connections");
  w.Uint64(o.connections);
  json_key(w, "concurrency");
  w.Uint64(o.concurrency);
  json_key(w, "expectGraceMs");
  json_ms(w, o.expect_grace);
  json_key(w, "toleranceMs");
  json_ms(w, o.tolerance);
  json_key(w, "timeoutMs");
  json_ms(w, o.timeout.value_or(std::chrono::milliseconds(0)));
  json_key(w, "window");
  if (kind == ProbeKind::join) {
    w.Null();
  } else {
    const auto from = kind == ProbeKind::stalling ? o.expect_grace : std::chrono::milliseconds(0);
    w.StartObject();
    json_key(w, "fromMs");
    json_ms(w, from);
    json_key(w, "toMs");
    json_ms(w, from + o.tolerance);
    w.EndObject();
  }
  json_key(w, "attempted");
  w.Uint64(r.attempted);
  json_key(w, "opened");
  w.Uint64(r.opened);
  json_key(w, "connectFailed");
  w.Uint64(r.connect_failed);
  json_key(w, "refused");
  w.Uint64(r.refused);
  json_key(w, "closedByNode");
  w.Uint64(r.closed_by_node);
  json_key(w, "timedOut");
  w.Uint64(r.timed_out);
  json_key(w, "early");
  w.Uint64(r.early);
  json_key(w, "late");
  w.Uint64(r.late);
  json_key(w, "closeReasons");
  json_counts(w, r.close_reasons);
  json_key(w, "replies");
  json_counts(w, r.replies);
  json_key(w, "versions");
  w.StartArray();
  for (uint8_t v : r.versions) w.Uint(v);
  w.EndArray();
  json_key(w, "details");
  w.StartArray();
  for (const auto& d : r.details) json_string(w, d);
  w.EndArray();
  json_key(w, "errors");
  json_counts(w, r.errors);
  json_key(w, "measured");
  json_string(w, r.measures_latency ? "joinLatency" : "timeToClose");
  json_key(w, "times");
  json_summary(w, r.times);
  json_key(w, "connectTimes");
  json_summary(w, r.connect_times);
  json_key(w, "verdict");
  json_string(w, r.pass ? "pass" : "fail");
  json_key(w, "failures");
  w.StartArray();
  for (const auto& failure : r.failures) json_string(w, failure);
  w.EndArray();
  json_key(w, "error");
  if (r.error.empty()) {
    w.Null();
  } else {
    json_string(w, r.error);
  }
  json_key(w, "elapsedMs");
  json_ms(w, r.elapsed);
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

std::string format_probe_duration(ProbeDuration d) {
  const int64_t us = d.count();
  const auto fixed = [](double value, int decimals, const char* unit) {
    char text[48];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    std::string out = text;
    while (out.back() == '0') out.pop_back();  // "300.0" -> "300", "2.50" -> "2.5"
    if (out.back() == '.') out.pop_back();
    return out + unit;
  };
  if (us < 0) return "-" + format_probe_duration(ProbeDuration(-us));
  if (us < 1000) return std::to_string(us) + "us";
  if (us < 1'000'000) return fixed(static_cast<double>(us) / 1e3, us < 10'000 ? 2 : 1, "ms");
  if (us % 1'000'000 == 0) return std::to_string(us / 1'000'000) + "s";
  return fixed(static_cast<double>(us) / 1e6, 3, "s");
}

}  // namespace zctl
