#include "zctl/core/event_stream.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "tls_context.hpp"
#include "zctl/core/admin_http.hpp"

namespace zctl {

namespace asio = boost::asio;
using asio::ip::tcp;

void SseParser::feed(std::string_view bytes, std::vector<SseMessage>& out) {
  partial_.append(bytes);
  size_t start = 0;
  for (;;) {
    const size_t nl = partial_.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view text(partial_.data() + start, nl - start);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    line(text, out);
    start = nl + 1;
  }
  partial_.erase(0, start);
}

void SseParser::line(std::string_view text, std::vector<SseMessage>& out) {
  if (text.empty()) {  // blank line: dispatch
    if (has_data_ || !current_.event.empty()) out.push_back(current_);
    current_ = SseMessage{current_.id, {}, {}};  // the id persists, per the SSE spec
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // comment (keepalive)
  const size_t colon = text.find(':');
  std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "id") {
    current_.id = value;
  } else if (field == "event") {
    current_.event = value;
  }
  // "retry" and unknown fields are ignored.
}

EventStreamClient::EventStreamClient(EventStreamOptions options) : options_(std::move(options)) {
  AdminAddress address = parse_admin_url(options_.node_url);
  host_ = std::move(address.host);
  port_ = std::move(address.port);
  https_ = address.https;
}

namespace {

// Runs the io_context until the pending operation completes or `timeout`
// passes, in which case the socket is closed and the operation fails.
void run_for(asio::io_context& io, tcp::socket& socket, std::chrono::steady_clock::duration timeout) {
  io.restart();
  io.run_for(timeout);
  if (!io.stopped()) {
    boost::system::error_code ignored;
    socket.close(ignored);
    io.run();
  }
}

constexpr auto kConnectTimeout = std::chrono::seconds(5);
// The server sends a keepalive every 15 s; silence for longer means a dead peer.
constexpr auto kIdleTimeout = std::chrono::seconds(45);

}  // namespace

std::string EventStreamClient::request_target(std::optional<uint64_t> after) const {
  std::string target = "/v1/events";
  char sep = '?';
  for (const auto& ns : options_.namespaces) {
    target += sep + std::string("namespace=") + percent_encode(ns);
    sep = '&';
  }
  for (const auto& t : options_.types) {
    target += sep + std::string("type=") + percent_encode(t);
    sep = '&';
  }
  if (after) target += sep + std::string("since=") + std::to_string(*after);
  return target;
}

int EventStreamClient::run(const std::function<bool(uint64_t, const std::string&)>& on_event,
                           const std::function<void(const StreamNotice&)>& on_notice) {
  std::optional<uint64_t> last_seq = options_.since;
  bool ever_connected = false;
  auto backoff = std::chrono::milliseconds(100);
  asio::io_context io;
  std::optional<asio::ssl::context> tls_context;
  if (https_) {
    try {
      tls_context.emplace(make_client_tls_context(options_.tls, ServerCheck::always, "TLS"));
    } catch (const std::exception& e) {
      on_notice({StreamNotice::Kind::disconnected, "cannot reach " + options_.node_url + ": " + e.what()});
      return 3;
    }
  }
  for (;;) {
    tcp::socket socket(io);
    std::optional<asio::ssl::stream<tcp::socket&>> tls;
    // Every read and write goes to the TLS stream when there is one.
    const auto on_stream = [&](auto&& operation) {
      if (tls) {
        operation(*tls);
      } else {
        operation(socket);
      }
    };
    boost::system::error_code ec = asio::error::timed_out;
    std::string failure;
    tcp::resolver resolver(io);
    const auto endpoints = resolver.resolve(host_, port_, ec);
    if (!ec) {
      ec = asio::error::timed_out;
      asio::async_connect(socket, endpoints, [&](const boost::system::error_code& e, const tcp::endpoint&) { ec = e; });
      run_for(io, socket, kConnectTimeout);
    }
    if (!ec && tls_context) {
      tls.emplace(socket, *tls_context);
      expect_server_name(*tls, host_);
      ec = asio::error::timed_out;
      tls->async_handshake(asio::ssl::stream_base::client, [&](const boost::system::error_code& e) { ec = e; });
      run_for(io, socket, kConnectTimeout);
      if (ec) failure = "TLS handshake: ";
    }
    std::string status_line;
    asio::streambuf buffer;
    if (!ec) {
      std::string request = "GET " + request_target(last_seq) + " HTTP/1.1\r\nHost: " + host_ + ":" + port_ +
                            "\r\nAccept: text/event-stream\r\nUser-Agent: zctl-watch\r\n";
      if (last_seq) request += "Last-Event-ID: " + std::to_string(*last_seq) + "\r\n";
      if (!options_.bearer_token.empty()) request += "Authorization: Bearer " + options_.bearer_token + "\r\n";
      request += "\r\n";
      on_stream([&](auto& s) { asio::write(s, asio::buffer(request), ec); });
    }
    if (!ec) {
      ec = asio::error::timed_out;
      on_stream([&](auto& s) {
        asio::async_read_until(s, buffer, "\r\n\r\n", [&](const boost::system::error_code& e, size_t) { ec = e; });
      });
      run_for(io, socket, kConnectTimeout);
    }
    if (!ec) {
      std::string head(asio::buffers_begin(buffer.data()), asio::buffers_end(buffer.data()));
      const size_t end = head.find("\r\n\r\n");
      buffer.consume(end + 4);
      status_line = head.substr(0, head.find("\r\n"));
      if (status_line.find(" 200 ") == std::string::npos) {
        // A definite answer (bad filter, wrong token): retrying will not help.
        std::string body = head.substr(end + 4);
        on_notice({StreamNotice::Kind::disconnected, "node answered " + status_line + " " + body});
        return 4;
      }
    }
    if (ec) {
      failure += ec.message();
      if (!ever_connected) {
        on_notice({StreamNotice::Kind::disconnected, "cannot reach " + options_.node_url + ": " + failure});
        return 3;
      }
      on_notice({StreamNotice::Kind::disconnected, "reconnecting in " + std::to_string(backoff.count()) + " ms: " + failure});
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      continue;
    }
    ever_connected = true;
    backoff = std::chrono::milliseconds(100);
    on_notice({StreamNotice::Kind::connected, options_.node_url});

    SseParser parser;
    std::vector<SseMessage> messages;
    std::string pending(asio::buffers_begin(buffer.data()), asio::buffers_end(buffer.data()));
    std::array<char, 16384> chunk;
    for (;;) {
      messages.clear();
      parser.feed(pending, messages);
      pending.clear();
      if (!last_seq && messages.empty() && !parser.last_id().empty()) {
        // The server's "stream starts after N" marker: resume from there.
        try {
          last_seq = std::stoull(parser.last_id());
        } catch (const std::exception&) {
        }
      }
      for (const auto& m : messages) {
        if (m.event == "gap") {
          on_notice({StreamNotice::Kind::gap, m.data});
          continue;
        }
        if (m.event == "overflow") {
          on_notice({StreamNotice::Kind::overflow, m.data});
          continue;
        }
        uint64_t seq = 0;
        try {
          seq = std::stoull(m.id);
        } catch (const std::exception&) {
          continue;  // not an event
        }
        if (last_seq && seq <= *last_seq) continue;  // already delivered before a reconnect
        last_seq = seq;
        if (!on_event(seq, m.data)) return 0;
      }
      size_t n = 0;
      ec = asio::error::timed_out;
      on_stream([&](auto& s) {
        s.async_read_some(asio::buffer(chunk), [&](const boost::system::error_code& e, size_t got) {
          ec = e;
          n = got;
        });
      });
      run_for(io, socket, kIdleTimeout);
      if (ec) break;
      pending.assign(chunk.data(), n);
    }
    on_notice({StreamNotice::Kind::disconnected,
               "stream ended (" + ec.message() + "); reconnecting after seq " + (last_seq ? std::to_string(*last_seq) : "-")});
    std::this_thread::sleep_for(backoff);
  }
}

namespace {

void append_value(std::string& out, const rapidjson::Value& v) {
  if (v.IsString()) {
    out.append(v.GetString(), v.GetStringLength());
  } else {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
    v.Accept(writer);
    out.append(sb.GetString(), sb.GetSize());
  }
}

const char* type_color(std::string_view ns, std::string_view type) {
  if (type == "stray" || type == "protocol_error" || type == "rejected" || type == "flood" || type == "unhealthy" ||
      type == "dropped") {
    return "\033[33m";  // yellow: needs a look
  }
  if (type == "state.is_leaderless" || type == "leadership.lost") return "\033[31m";
  if (type == "state.has_leader" || type == "recovered" || type == "leadership.gained") return "\033[32m";
  if (ns == "node") return "\033[36m";
  return "";
}

}  // namespace

std::string format_event_line(const std::string& json, bool color) {
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) return json;
  auto str = [&](const char* key) -> std::string {
    auto it = doc.FindMember(key);
    return it != doc.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString()) : std::string();
  };
  const std::string ts = str("timestamp");
  const std::string ns = str("namespace");
  const std::string type = str("eventType");
  // "2025-01-10T13:54:48.151522421-05:00" -> "13:54:48.151"
  const std::string time = ts.size() >= 23 ? ts.substr(11, 12) : ts;
  std::string out;
  auto seq_it = doc.FindMember("seq");
  const std::string seq = seq_it != doc.MemberEnd() && seq_it->value.IsUint64() ? std::to_string(seq_it->value.GetUint64()) : "?";
  const char* c = color ? type_color(ns, type) : "";
  const char* dim = color ? "\033[2m" : "";
  const char* reset = color ? "\033[0m" : "";
  out += dim + time + reset + " ";
  std::string seq_col = "#" + seq;
  seq_col.resize(std::max<size_t>(seq_col.size(), 8), ' ');
  out += dim + seq_col + reset + " ";
  std::string ns_col = ns;
  ns_col.resize(std::max<size_t>(ns_col.size(), 10), ' ');
  out += ns_col + " ";
  std::string type_col = type;
  type_col.resize(std::max<size_t>(type_col.size(), 20), ' ');
  out += std::string(c) + type_col + (*c ? reset : "");
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string_view key(it->name.GetString(), it->name.GetStringLength());
    if (key == "namespace" || key == "eventType" || key == "event_src_id" || key == "timestamp" || key == "seq") continue;
    out += " ";
    out += key;
    out += "=";
    append_value(out, it->value);
  }
  const std::string src = str("event_src_id");
  if (!src.empty()) out += std::string(" ") + dim + "node=" + src + reset;
  return out;
}

}  // namespace zctl
