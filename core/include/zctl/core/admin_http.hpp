// Client side of one request to a node's admin API (HTTP/1.1, or HTTPS for a
// node with admin.tls), shared by `zctl watch` (the node URL) and `zctl
// cluster` (whole exchanges).
//
// parse_admin_url and parse_http_location are pure. send_admin_request opens
// its own connection and io_context, blocks until the answer or a timeout,
// and may be called from any thread; it keeps no state between calls.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace zctl {

// Where a node's admin API listens.
struct AdminAddress {
  std::string host;  // without brackets, also for IPv6
  std::string port;
  bool https = false;
  // "http://127.0.0.1:6280", "https://[::1]:6280".
  std::string url() const;
};

// The client side of HTTPS. The node's certificate is always verified, for
// the URL's host name or IP address, against `ca_file` (empty: the system's
// trust store); `cert_file` and `key_file` are this client's certificate
// (empty: none), which a node with admin.tls asks for by default.
struct TlsClientFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// "http://HOST:PORT", "https://HOST:PORT", "HOST:PORT", "HOST" (port 6280),
// "http://[::1]:6280/"; throws std::invalid_argument with a readable reason
// for another scheme, a path after the address, or no host.
AdminAddress parse_admin_url(std::string_view url);

// An absolute http or https Location header, "http://HOST:PORT/path": the
// address and the request target ("/path", "/" when absent). Throws
// std::invalid_argument for anything else (a relative reference, no host).
struct HttpLocation {
  AdminAddress address;
  std::string target;
};
HttpLocation parse_http_location(std::string_view location);

// RFC 3986 percent-encoding of everything but unreserved characters (and
// '*'), for query values and path segments.
std::string percent_encode(std::string_view text);

struct AdminHttpRequest {
  std::string method;        // "GET", "POST", "DELETE"
  std::string target;        // "/v1/cluster/members/ctrl3"
  std::string body;          // sent as application/json when not empty, or for POST
  std::string bearer_token;  // "" = no Authorization header
  TlsClientFiles tls;        // for https addresses
  std::chrono::milliseconds connect_timeout{5000};
  // From sending the request to the whole answer read. Longer than the 30 s a
  // node waits for the cluster to settle a membership call, so its own
  // timeout answer still arrives.
  std::chrono::milliseconds response_timeout{40000};
};

struct AdminHttpResponse {
  // False when no answer came: the name did not resolve, the connection was
  // refused or timed out, or it broke before a whole response was read.
  bool answered = false;
  std::string transport_error;  // why, when !answered
  int status = 0;
  std::string reason;    // "Temporary Redirect"
  std::string location;  // the Location header, "" when absent
  std::string body;
};

// Sends one request on a new connection (Connection: close) and reads the
// whole answer. Never throws for network failures; they are in the result.
AdminHttpResponse send_admin_request(const AdminAddress& node, const AdminHttpRequest& request);

}  // namespace zctl
