#include "zctl/core/admin_http.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <cctype>
#include <stdexcept>

#include "tls_context.hpp"

namespace zctl {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr std::string_view kHttpScheme = "http://";
constexpr std::string_view kHttpsScheme = "https://";

// Strips a leading "http://" or "https://" from `rest`; true for https.
bool take_scheme(std::string_view& rest) {
  if (rest.substr(0, kHttpsScheme.size()) == kHttpsScheme) {
    rest.remove_prefix(kHttpsScheme.size());
    return true;
  }
  if (rest.substr(0, kHttpScheme.size()) == kHttpScheme) rest.remove_prefix(kHttpScheme.size());
  return false;
}

// "HOST:PORT", "HOST", "[::1]:PORT"; `whole` is only for messages.
AdminAddress parse_authority(std::string_view authority, std::string_view default_port, std::string_view whole) {
  AdminAddress address;
  const size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos || authority.back() == ']') {
    address.host = std::string(authority);
    address.port = std::string(default_port);
  } else {
    address.host = std::string(authority.substr(0, colon));
    address.port = std::string(authority.substr(colon + 1));
  }
  if (address.host.size() >= 2 && address.host.front() == '[') {
    address.host = address.host.substr(1, address.host.size() - 2);
  }
  if (address.host.empty() || address.port.empty()) {
    throw std::invalid_argument("node URL must be http://HOST:PORT, got " + std::string(whole));
  }
  return address;
}

std::string host_header(const AdminAddress& a) {
  const bool ipv6 = a.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + a.host + "]" : a.host) + ":" + a.port;
}

}  // namespace

std::string AdminAddress::url() const {
  return std::string(https ? kHttpsScheme : kHttpScheme) + host_header(*this);
}

AdminAddress parse_admin_url(std::string_view url) {
  std::string_view rest = url;
  const bool https = take_scheme(rest);
  if (rest.find("://") != std::string_view::npos) {
    throw std::invalid_argument("node URL must be http:// or https://HOST:PORT, got " + std::string(url));
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    throw std::invalid_argument("node URL must be http://HOST:PORT, got " + std::string(url));
  }
  AdminAddress address = parse_authority(rest, "6280", url);
  address.https = https;
  return address;
}

HttpLocation parse_http_location(std::string_view location) {
  std::string_view rest = location;
  const bool https = take_scheme(rest);
  if (rest.size() == location.size()) {
    throw std::invalid_argument("not an absolute http URL: '" + std::string(location) + "'");
  }
  const size_t slash = rest.find('/');
  HttpLocation out;
  out.address = parse_authority(rest.substr(0, slash), https ? "443" : "80", location);
  out.address.https = https;
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  return out;
}

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '*') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

AdminHttpResponse send_admin_request(const AdminAddress& node, const AdminHttpRequest& request) {
  AdminHttpResponse out;
  asio::io_context io;
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(node.host, node.port, ec);
  if (ec) {
    out.transport_error = ec.message();
    return out;
  }

  // beast::tcp_stream applies expires_after to asynchronous operations only,
  // so each step is started and then run to completion here.
  beast::tcp_stream stream(io);
  stream.expires_after(request.connect_timeout);
  stream.async_connect(endpoints, [&](const boost::system::error_code& e, const tcp::endpoint&) { ec = e; });
  io.run();
  if (ec) {
    out.transport_error = ec == beast::error::timeout
                              ? "no connection within " + std::to_string(request.connect_timeout.count()) + " ms"
                              : ec.message();
    return out;
  }

  std::unique_ptr<ssl::context> tls_context;
  std::unique_ptr<ssl::stream<beast::tcp_stream&>> tls;
  if (node.https) {
    try {
      tls_context = std::make_unique<ssl::context>(make_client_tls_context(request.tls, ServerCheck::always, "TLS"));
    } catch (const std::exception& e) {
      out.transport_error = e.what();
      return out;
    }
    tls = std::make_unique<ssl::stream<beast::tcp_stream&>>(stream, *tls_context);
    expect_server_name(*tls, node.host);
    tls->async_handshake(ssl::stream_base::client, [&](const boost::system::error_code& e) { ec = e; });
    io.restart();
    io.run();
    if (ec) {
      out.transport_error = ec == beast::error::timeout ? "no TLS handshake within " +
                                                              std::to_string(request.connect_timeout.count()) + " ms"
                                                        : "TLS handshake: " + ec.message();
      return out;
    }
  }

  http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
  req.set(http::field::host, host_header(node));
  req.set(http::field::user_agent, "zctl");
  req.set(http::field::accept, "application/json");
  if (!request.bearer_token.empty()) req.set(http::field::authorization, "Bearer " + request.bearer_token);
  if (!request.body.empty()) req.set(http::field::content_type, "application/json");
  req.keep_alive(false);
  req.body() = request.body;
  req.prepare_payload();

  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  stream.expires_after(request.response_timeout);
  const auto exchange = [&](auto& s) {
    http::async_write(s, req, [&](const boost::system::error_code& e, size_t) {
      ec = e;
      if (!ec) http::async_read(s, buffer, res, [&](const boost::system::error_code& e2, size_t) { ec = e2; });
    });
  };
  if (tls) {
    exchange(*tls);
  } else {
    exchange(stream);
  }
  io.restart();
  io.run();
  if (ec) {
    out.transport_error = ec == beast::error::timeout
                              ? "no answer within " + std::to_string(request.response_timeout.count()) + " ms"
                          : ec == http::error::end_of_stream ? "the node closed the connection without answering"
                                                             : ec.message();
    return out;
  }
  out.answered = true;
  out.status = static_cast<int>(res.result_int());
  out.reason = std::string(res.reason());
  out.location = std::string(res[http::field::location]);
  out.body = std::move(res.body());
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return out;
}

}  // namespace zctl
