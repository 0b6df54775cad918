#include "admin_server.hpp"

#include <openssl/crypto.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <rapidjson/document.h>

#include <variant>

#include "cluster_engine.hpp"
#include "zctl/core/config.hpp"
#include "zctl/core/detail/json_text.hpp"
#include "net_address.hpp"
#include "tls_context.hpp"
#include "event_filter.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/sink_host.hpp"

namespace zctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr auto kStreamWriteTimeout = std::chrono::seconds(30);
constexpr auto kStreamKeepalive = std::chrono::seconds(15);
constexpr size_t kStreamReadChunk = 1024;
constexpr size_t kMaxSessions = 512;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_u64(std::string_view text, uint64_t& out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return false;
    value = value * 10 + digit;
  }
  out = value;
  return true;
}

Response json_response(const Request& req, http::status status, std::string body) {
  Response res{status, req.version()};
  res.set(http::field::server, "zctl");
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response error_response(const Request& req, http::status status, std::string_view error, std::string_view detail) {
  std::string body = "{\"error\":";
  json::append_string(body, error);
  body += ",\"detail\":";
  json::append_string(body, detail);
  body += "}";
  return json_response(req, status, std::move(body));
}

bool token_matches(std::string_view given, const std::string& expected) {
  // Constant time in the token's content; only the length can leak.
  return given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

void append_sse_event(std::string& out, const Event& e) {
  out.append("id: ");
  json::append_integer(out, e.seq);
  out.append("\nevent: ");
  out.append(e.event_namespace).push_back('/');
  out.append(e.event_type);
  out.append("\ndata: ");
  out.append(e.json);
  out.append("\n\n");
}

}  // namespace

std::string url_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

EventStreamQuery parse_event_stream_query(std::string_view target, std::string_view last_event_id) {
  EventStreamQuery q;
  const auto qmark = target.find('?');
  std::string_view query = qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    const std::string key = url_decode(pair.substr(0, eq));
    const std::string value = eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1));
    if (key == "namespace") {
      q.namespaces.push_back(value);
    } else if (key == "type") {
      q.types.push_back(value);
    } else if (key == "since") {
      uint64_t since = 0;
      if (!parse_u64(value, since)) {
        q.valid = false;
        q.error = "since must be a non-negative integer, got '" + value + "'";
        return q;
      }
      q.since = since;
    } else {
      q.valid = false;
      q.error = "unknown query parameter '" + key + "' (expected namespace, type, since)";
      return q;
    }
  }
  if (!last_event_id.empty()) {
    // A reconnecting EventSource resumes after the last id it saw; that wins
    // over the `since` of the original URL.
    uint64_t last = 0;
    if (!parse_u64(last_event_id, last)) {
      q.valid = false;
      q.error = "Last-Event-ID must be a sequence number";
      return q;
    }
    q.since = last;
  }
  return q;
}

struct ClusterCall;

struct AdminServer::Session : std::enable_shared_from_this<AdminServer::Session> {
  Session(AdminServer& owner, tcp::socket socket) : server(owner), stream(std::move(socket)) {
    if (owner.tls_) tls = std::make_unique<beast::ssl_stream<beast::tcp_stream&>>(stream, *owner.tls_);
  }

  asio::awaitable<void> run();
  // Every read and write goes through these, over TLS when it is on; the
  // deadline is always the tcp_stream's.
  asio::awaitable<void> read_request(beast::flat_buffer& buffer, http::request_parser<http::string_body>& parser);
  template <typename Message>
  asio::awaitable<void> write_message(Message& message);
  asio::awaitable<void> write_bytes(const std::string& bytes);
  asio::awaitable<void> close();
  asio::awaitable<void> serve_events(const Request& req);
  std::optional<Response> refuse_unauthorized(const Request& req) const;
  Response handle(const Request& req);
  std::variant<Response, ClusterCall> parse_cluster_request(const Request& req, std::string_view path);
  asio::awaitable<std::optional<ClusterReply>> call_cluster(ClusterCall call);
  Response cluster_response(const Request& req, const ClusterCall& call, const std::optional<ClusterReply>& answer);

  AdminServer& server;
  beast::tcp_stream stream;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream&>> tls;  // over `stream`; null without TLS
};

AdminServer::AdminServer(asio::io_context& io, Journal& journal, MetricsRegistry& metrics, const SinkHost& sinks,
                         std::function<Readiness()> readiness, std::string bearer_token)
    : io_(io), journal_(journal), metrics_(metrics), sinks_(sinks), readiness_(std::move(readiness)),
      bearer_token_(std::move(bearer_token)), acceptor_(io), accept_retry_(io) {}

AdminServer::~AdminServer() = default;

void AdminServer::attach_cluster(ClusterEngine& cluster, std::function<bool(const std::string&)> connected) {
  cluster_ = &cluster;
  peer_connected_ = std::move(connected);
}

std::string cluster_view_json(const ClusterView& view, const std::function<bool(const std::string&)>& connected) {
  std::string body = "{\"id\":";
  json::append_string(body, view.node_id);
  body += ",\"state\":";
  json::append_string(body, view.state);
  body += ",\"term\":" + std::to_string(view.status.term) +
          ",\"commitIndex\":" + std::to_string(view.status.commit_index) +
          ",\"configurationIndex\":" + std::to_string(view.configuration_index) +
          (view.status.has_leader ? ",\"hasLeader\":true" : ",\"hasLeader\":false") + ",\"leaderId\":";
  if (view.status.has_leader) {
    json::append_string(body, view.status.leader_id);
  } else {
    body += "null";
  }
  const std::string contact = std::to_string(view.last_contact_seconds);
  body += ",\"lastContactSeconds\":" + contact + ",\"members\":[";
  bool first = true;
  for (const auto& m : view.members) {
    if (!std::exchange(first, false)) body += ',';
    const bool self = m.id == view.node_id;
    body += "{\"id\":";
    json::append_string(body, m.id);
    body += ",\"raftAddr\":";
    json::append_string(body, m.raft_addr);
    body += ",\"meshAddr\":";
    json::append_string(body, m.mesh_addr);
    body += ",\"adminAddr\":";
    json::append_string(body, m.admin_addr);
    body += ",\"role\":";
    json::append_string(body, m.role);
    body += m.role == "voter" ? ",\"voter\":true" : ",\"voter\":false";
    body += m.leader ? ",\"leader\":true" : ",\"leader\":false";
    body += ",\"connected\":";
    body += self ? "null" : (connected && connected(m.id) ? "true" : "false");
    // raft tells a follower when it last heard from the leader, and nothing
    // about the other members.
    body += ",\"lastContactSeconds\":";
    body += (m.leader && !self && view.state == "follower") ? contact : "null";
    body += "}";
  }
  body += "],\"authorized\":[";
  first = true;
  for (const auto& id : view.authorized) {
    if (!std::exchange(first, false)) body += ',';
    json::append_string(body, id);
  }
  body += "]}";
  return body;
}

void AdminServer::listen(const std::string& address, const TlsConfig& tls) {
  if (tls.enabled()) {
    tls_ = std::make_unique<ssl::context>(make_server_tls_context(tls, "admin.tls"));
    tls_failures_ = &metrics_.counter("controller_admin_tls_handshake_failures_total",
                                      "Admin API connections whose TLS handshake failed (no or untrusted client "
                                      "certificate, plain HTTP to the HTTPS port, ...).")
                         .with({});
  }
  const tcp::endpoint endpoint = resolve_listen_address(address);
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("admin API cannot listen on " + address + ": " + ec.message());
  accept_loop();
}

std::string AdminServer::url() const { return scheme() + local_address(); }

std::string AdminServer::local_address() const {
  boost::system::error_code ec;
  return format_endpoint(acceptor_.local_endpoint(ec));
}

void AdminServer::accept_loop() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopped_) return;
    if (!ec) {
      if (sessions_.size() >= kMaxSessions) {
        log_warn("admin API: " + std::to_string(kMaxSessions) + " connections open; refusing another");
        socket.close(ec);
      } else {
        auto session = std::make_shared<Session>(*this, std::move(socket));
        sessions_.insert(session);
        asio::co_spawn(io_, session->run(), [this, session](std::exception_ptr) { sessions_.erase(session); });
      }
    } else {
      // Out of descriptors (EMFILE) fails again at once: pause instead of
      // spinning, and let closing connections free some.
      log_warn("admin API: accept failed: " + ec.message() + "; retrying in 100 ms");
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](boost::system::error_code wait_ec) {
        if (!wait_ec && !stopped_) accept_loop();
      });
      return;
    }
    accept_loop();
  });
}

void AdminServer::consume(const EventPtr&) {
  // No stream open: nothing to wake. Without this check every event of a
  // burst (a flood's strays) woke the io thread once. A stream opened
  // meanwhile counts itself before its first journal read, so it reads
  // this event itself (the journal's lock orders the two).
  if (open_streams_.load(std::memory_order_acquire) == 0) return;
  // One post per burst of events, however many streams are waiting.
  if (!wake_posted_.exchange(true, std::memory_order_acq_rel)) {
    asio::post(io_, [this] {
      wake_posted_.store(false, std::memory_order_release);
      for (auto* waiter : stream_waiters_) waiter->cancel();
    });
  }
}

void AdminServer::stop() {
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  accept_retry_.cancel();
  for (auto* waiter : stream_waiters_) waiter->cancel();
  for (const auto& session : sessions_) session->stream.socket().close(ec);
}

std::optional<Response> AdminServer::Session::refuse_unauthorized(const Request& req) const {
  if (server.bearer_token_.empty()) return std::nullopt;
  const auto auth = req[http::field::authorization];
  const std::string_view header(auth.data(), auth.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (header.substr(0, kBearer.size()) == kBearer && token_matches(header.substr(kBearer.size()), server.bearer_token_)) {
    return std::nullopt;
  }
  auto res = error_response(req, http::status::unauthorized, "unauthorized",
                            "this endpoint needs 'Authorization: Bearer <token>' (admin.token_file)");
  res.set(http::field::www_authenticate, "Bearer");
  return res;
}

Response AdminServer::Session::handle(const Request& req) {
  const std::string_view target(req.target().data(), req.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz") {
    if (req.method() != http::verb::get) {
      return error_response(req, http::status::method_not_allowed, "method_not_allowed", "use GET");
    }
    return json_response(req, http::status::ok, R"({"status":"serving"})");
  }
  if (auto refusal = refuse_unauthorized(req)) return std::move(*refusal);
  if (req.method() != http::verb::get) {
    return error_response(req, http::status::method_not_allowed, "method_not_allowed", "use GET");
  }
  if (path == "/readyz") {
    const Readiness r = server.readiness_();
    std::string body = r.ready ? "{\"status\":\"ready\",\"detail\":" : "{\"error\":\"not_ready\",\"detail\":";
    json::append_string(body, r.detail);
    body += "}";
    return json_response(req, r.ready ? http::status::ok : http::status::service_unavailable, std::move(body));
  }
  if (path == "/metrics") {
    Response res{http::status::ok, req.version()};
    res.set(http::field::server, "zctl");
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.keep_alive(req.keep_alive());
    res.body() = server.metrics_.render();
    res.prepare_payload();
    return res;
  }
  if (path == "/v1/sinks") {
    std::string body = "[";
    for (const auto& s : server.sinks_.status()) {
      if (body.size() > 1) body += ',';
      body += "{\"name\":";
      json::append_string(body, s.name);
      body += ",\"plugin\":";
      json::append_string(body, s.plugin);
      body += s.up ? ",\"up\":true" : ",\"up\":false";
      body += ",\"reason\":";
      json::append_string(body, s.reason);
      body += ",\"queued\":" + std::to_string(s.queued) + ",\"delivered\":" + std::to_string(s.delivered) +
              ",\"failed\":" + std::to_string(s.failed) + ",\"dropped\":" + std::to_string(s.dropped) + "}";
    }
    body += "]";
    return json_response(req, http::status::ok, std::move(body));
  }
  return error_response(req, http::status::not_found, "not_found",
                        "no such endpoint; see zctl-serve(1) for /healthz, /readyz, /metrics, /v1/events, /v1/sinks, /v1/cluster");
}

namespace {

http::status status_of(ClusterReply::Code code) {
  switch (code) {
    case ClusterReply::Code::ok:
      return http::status::ok;
    case ClusterReply::Code::not_leader:
      return http::status::temporary_redirect;
    case ClusterReply::Code::no_leader:
      return http::status::service_unavailable;
    case ClusterReply::Code::not_member:
      return http::status::not_found;
    case ClusterReply::Code::invalid:
      return http::status::conflict;
    case ClusterReply::Code::failed:
      break;
  }
  return http::status::internal_server_error;
}

const char* error_of(ClusterReply::Code code) {
  switch (code) {
    case ClusterReply::Code::not_leader:
      return "not_leader";
    case ClusterReply::Code::no_leader:
      return "no_leader";
    case ClusterReply::Code::not_member:
      return "not_member";
    case ClusterReply::Code::invalid:
      return "conflict";
    default:
      return "failed";
  }
}

// The "id" of a JSON body like {"id":"ctrl4"}; nullopt when the body is not
// such an object; "" when it has no id.
std::optional<std::string> id_in_body(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return std::string();
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  const auto it = doc.FindMember("id");
  if (it == doc.MemberEnd() || it->value.IsNull()) return std::string();
  if (!it->value.IsString()) return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

constexpr auto kClusterRequestTimeout = std::chrono::seconds(30);

}  // namespace

// A membership call to make: which, and about which node.
struct ClusterCall {
  enum class Kind { add, remove, transfer } kind = Kind::add;
  std::string id;
};

// GET /v1/cluster, or the call a request asks for, or the error answer.
std::variant<Response, ClusterCall> AdminServer::Session::parse_cluster_request(const Request& req,
                                                                               std::string_view path) {
  if (path == "/v1/cluster") {
    if (req.method() != http::verb::get) {
      return error_response(req, http::status::method_not_allowed, "method_not_allowed", "use GET");
    }
    return json_response(req, http::status::ok, cluster_view_json(server.cluster_->view(), server.peer_connected_));
  }
  constexpr std::string_view kMembers = "/v1/cluster/members";
  ClusterCall call;
  if (path == kMembers && req.method() == http::verb::post) {
    call.kind = ClusterCall::Kind::add;
  } else if (path.substr(0, kMembers.size() + 1) == std::string(kMembers) + "/" && req.method() == http::verb::delete_) {
    call.kind = ClusterCall::Kind::remove;
    call.id = std::string(path.substr(kMembers.size() + 1));
  } else if (path == "/v1/cluster/transfer-leadership" && req.method() == http::verb::post) {
    call.kind = ClusterCall::Kind::transfer;
  } else if (path.substr(0, kMembers.size()) == kMembers || path == "/v1/cluster/transfer-leadership") {
    return error_response(req, http::status::method_not_allowed, "method_not_allowed",
                          "use POST /v1/cluster/members, DELETE /v1/cluster/members/{id} or POST "
                          "/v1/cluster/transfer-leadership");
  } else {
    return error_response(req, http::status::not_found, "not_found",
                          "no such endpoint; see zctl-serve(1) for /v1/cluster and its members");
  }
  if (call.kind != ClusterCall::Kind::remove) {
    const auto body_id = id_in_body(req.body());
    if (!body_id) {
      return error_response(req, http::status::bad_request, "bad_request",
                            "the body must be a JSON object such as {\"id\":\"ctrl4\"}");
    }
    call.id = *body_id;
  }
  if ((call.kind != ClusterCall::Kind::transfer || !call.id.empty()) && !is_node_id(call.id)) {
    return error_response(req, http::status::bad_request, "bad_request",
                          call.id.empty() ? "a node id is required"
                                          : "invalid node id: use 1 to 64 letters, digits, '_' and '-'");
  }
  return call;
}

// Membership calls complete on the raft loop thread; the answer is posted
// back here and wakes the session through a cancelled timer. (GCC 12
// miscompiles temporaries that live across a co_await, so this coroutine
// only waits; building the response is cluster_response()'s.)
asio::awaitable<std::optional<ClusterReply>> AdminServer::Session::call_cluster(ClusterCall call) {
  auto answer = std::make_shared<std::optional<ClusterReply>>();
  auto woken = std::make_shared<asio::steady_timer>(server.io_, kClusterRequestTimeout);
  ClusterEngine::ReplyCallback done = [answer, woken, &io = server.io_](ClusterReply reply) {
    asio::post(io, [answer, woken, reply = std::move(reply)]() mutable {
      *answer = std::move(reply);
      woken->cancel();
    });
  };
  switch (call.kind) {
    case ClusterCall::Kind::add:
      server.cluster_->authorize(call.id, done);
      break;
    case ClusterCall::Kind::remove:
      server.cluster_->remove(call.id, done);
      break;
    case ClusterCall::Kind::transfer:
      server.cluster_->transfer_leadership(call.id, done);
      break;
  }
  boost::system::error_code ec;
  co_await woken->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::optional<ClusterReply> result = *answer;
  co_return result;
}

Response AdminServer::Session::cluster_response(const Request& req, const ClusterCall& call,
                                                const std::optional<ClusterReply>& answer) {
  if (!answer) {
    return error_response(req, http::status::gateway_timeout, "timeout",
                          "the cluster did not answer within 30 s; check zctl cluster list");
  }
  const ClusterReply& reply = *answer;
  if (reply.code == ClusterReply::Code::ok) {
    std::string body;
    switch (call.kind) {
      case ClusterCall::Kind::add:
        body = "{\"authorized\":";
        json::append_string(body, reply.value);
        body += "}";
        break;
      case ClusterCall::Kind::remove:
        body = "{\"removed\":";
        json::append_string(body, reply.value);
        body += ",\"index\":" + std::to_string(reply.index) + "}";
        break;
      case ClusterCall::Kind::transfer:
        body = "{\"leaderId\":";
        json::append_string(body, reply.value);
        body += "}";
        break;
    }
    return json_response(req, http::status::ok, std::move(body));
  }
  if (reply.code == ClusterReply::Code::not_leader && reply.leader_admin.empty()) {
    return error_response(req, http::status::service_unavailable, "not_leader",
                          reply.detail + "; its admin address is not known yet, retry shortly");
  }
  std::string body = "{\"error\":";
  json::append_string(body, error_of(reply.code));
  body += ",\"detail\":";
  json::append_string(body, reply.detail);
  if (!reply.leader_id.empty()) {
    body += ",\"leaderId\":";
    json::append_string(body, reply.leader_id);
  }
  body += "}";
  Response res = json_response(req, status_of(reply.code), std::move(body));
  if (reply.code == ClusterReply::Code::not_leader) {
    res.set(http::field::location, server.scheme() + reply.leader_admin + std::string(req.target()));
  }
  return res;
}

asio::awaitable<void> AdminServer::Session::run() {
  auto self = shared_from_this();
  beast::flat_buffer buffer;
  try {
    if (tls) {
      stream.expires_after(kRequestTimeout);
      boost::system::error_code ec;
      co_await tls->async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        server.tls_failures_->inc();
        boost::system::error_code peer_gone;
        const auto peer = stream.socket().remote_endpoint(peer_gone);
        log_info("admin API: TLS handshake with " + (peer_gone ? std::string("a client that left") : format_endpoint(peer)) +
                 " failed: " + ec.message());
        co_await close();
        co_return;
      }
    }
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(64 * 1024);
      co_await read_request(buffer, parser);
      Request req = parser.release();
      const std::string_view target(req.target().data(), req.target().size());
      if (target.substr(0, target.find('?')) == "/v1/events" && req.method() == http::verb::get) {
        if (auto refusal = refuse_unauthorized(req)) {
          co_await write_message(*refusal);
        } else {
          co_await serve_events(req);
        }
        break;
      }
      const std::string_view path = target.substr(0, target.find('?'));
      bool cluster_path = path.substr(0, 11) == "/v1/cluster" && server.cluster_ != nullptr;
      if (cluster_path && refuse_unauthorized(req).has_value()) cluster_path = false;  // handle() answers 401
      Response res;
      if (!cluster_path) {
        res = handle(req);
      } else {
        auto parsed = parse_cluster_request(req, path);
        if (std::holds_alternative<Response>(parsed)) {
          res = std::move(std::get<Response>(parsed));
        } else {
          const ClusterCall call = std::get<ClusterCall>(parsed);
          const std::optional<ClusterReply> answer = co_await call_cluster(call);
          res = cluster_response(req, call, answer);
        }
      }
      const bool keep_alive = res.keep_alive();
      co_await write_message(res);
      if (!keep_alive) break;
    }
  } catch (const boost::system::system_error& e) {
    const auto& code = e.code();
    if (code != http::error::end_of_stream && code != asio::error::operation_aborted &&
        code != asio::error::eof && code != beast::error::timeout && code != asio::error::connection_reset) {
      log_debug(std::string("admin API: connection ended: ") + e.what());
    }
  }
  co_await close();
}

asio::awaitable<void> AdminServer::Session::read_request(beast::flat_buffer& buffer,
                                                         http::request_parser<http::string_body>& parser) {
  stream.expires_after(kRequestTimeout);
  if (tls) {
    co_await http::async_read(*tls, buffer, parser, asio::use_awaitable);
  } else {
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  }
}

template <typename Message>
asio::awaitable<void> AdminServer::Session::write_message(Message& message) {
  stream.expires_after(kStreamWriteTimeout);
  if (tls) {
    co_await http::async_write(*tls, message, asio::use_awaitable);
  } else {
    co_await http::async_write(stream, message, asio::use_awaitable);
  }
}

asio::awaitable<void> AdminServer::Session::write_bytes(const std::string& bytes) {
  stream.expires_after(kStreamWriteTimeout);
  if (tls) {
    co_await asio::async_write(*tls, asio::buffer(bytes), asio::use_awaitable);
  } else {
    co_await asio::async_write(stream, asio::buffer(bytes), asio::use_awaitable);
  }
}

// A TLS session ends with close_notify, so that a client reading a
// close-delimited body (the event stream) sees a clean end, not a truncation.
asio::awaitable<void> AdminServer::Session::close() {
  boost::system::error_code ec;
  if (tls && !server.stopped_) {
    stream.expires_after(std::chrono::seconds(1));
    co_await tls->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  }
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream.socket().close(ec);
}

asio::awaitable<void> AdminServer::Session::serve_events(const Request& req) {
  const auto last_id = req["Last-Event-ID"];
  const std::string_view target(req.target().data(), req.target().size());
  const EventStreamQuery query = parse_event_stream_query(target, std::string_view(last_id.data(), last_id.size()));
  if (!query.valid) {
    auto refusal = error_response(req, http::status::bad_request, "bad_request", query.error);
    co_await write_message(refusal);
    co_return;
  }
  // The body is close-delimited: no length, no chunking, so any SSE client
  // (curl -N, EventSource) reads it as it comes.
  std::string out =
      "HTTP/1.1 200 OK\r\nServer: zctl\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
      "retry: 1000\n\n";
  Journal& journal = server.journal_;
  // Without `since` the stream starts live; since=N replays everything after N.
  uint64_t next = query.since ? *query.since + 1 : journal.newest_seq() + 1;
  if (!query.since && next > 1) {
    // An id with no data dispatches nothing but tells the client where the
    // stream starts, so a reconnect before the first event loses nothing.
    out += "id: " + std::to_string(next - 1) + "\n\n";
  }
  bool first_read = true;
  asio::steady_timer waiter(stream.get_executor());
  server.stream_waiters_.insert(&waiter);
  server.open_streams_.fetch_add(1, std::memory_order_acq_rel);
  struct Unregister {
    AdminServer& server;
    asio::steady_timer* waiter;
    ~Unregister() {
      server.stream_waiters_.erase(waiter);
      server.open_streams_.fetch_sub(1, std::memory_order_acq_rel);
    }
  } unregister{server, &waiter};

  std::vector<EventPtr> batch;
  while (!server.stopped_) {
    batch.clear();
    const uint64_t oldest = journal.read_from(next, kStreamReadChunk, batch);
    if (oldest > next) {
      std::string gap = "{\"from\":" + std::to_string(next) + ",\"to\":" + std::to_string(oldest - 1) +
                        ",\"oldest\":" + std::to_string(oldest) + "}";
      if (first_read) {
        // Asked for events the journal no longer holds: say so, then go on
        // from the oldest it has.
        out += "event: gap\ndata: " + gap + "\n\n";
      } else {
        // This client read slower than events arrived and the journal wrapped
        // past it: tell it and hang up; it can resume and learn the gap.
        out += "event: overflow\ndata: " + gap + "\n\n";
        co_await write_bytes(out);
        co_return;
      }
    }
    first_read = false;
    for (const auto& event : batch) {
      if (filter_matches(query.namespaces, query.types, *event)) append_sse_event(out, *event);
      next = event->seq + 1;
    }
    if (!out.empty()) {
      co_await write_bytes(out);
      out.clear();
      if (batch.size() == kStreamReadChunk) continue;  // more is waiting
    }
    if (!batch.empty()) continue;
    // A wake-up posted while we were writing cancelled nothing; look again
    // before sleeping (the io thread is single, so this cannot race).
    if (journal.newest_seq() >= next) continue;
    waiter.expires_after(kStreamKeepalive);
    boost::system::error_code ec;
    co_await waiter.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) out = ": keepalive\n\n";  // expired, not woken: keep proxies and clients from timing out
  }
}

}  // namespace zctl
