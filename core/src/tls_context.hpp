// TLS contexts: the server side for the mesh port and the admin API, built
// from their `tls` settings (TLS 1.2 or later, the certificate chain and key,
// client-certificate verification against `ca_file`, required when
// `require_client_cert`), and the client side of the admin API for `zctl
// watch` and `zctl cluster`. Built once before use; then only read.
#pragma once

#include <string_view>

#include <string>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>

#include "zctl/core/admin_http.hpp"
#include "zctl/core/config.hpp"

namespace zctl {

// Throws std::runtime_error that starts with `key` ("mesh.tls") and names
// the file that cannot be read or loaded.
boost::asio::ssl::context make_server_tls_context(const TlsConfig& tls, std::string_view key);

// Verifies the node against `files.ca_file` (or the system's trust store)
// and presents the client certificate when one is given. Throws
// std::runtime_error naming the file. Each stream still needs its host name
// for SNI and verification: see expect_admin_host().
boost::asio::ssl::context make_admin_client_tls_context(const AdminTlsFiles& files);

// Sends `host` as SNI unless it is an IP address (RFC 6066: names only).
void set_server_name(void* ssl_native_handle, const std::string& host);

// One client stream: SNI, and the node's certificate must name `host` (a
// DNS name, or an IP address in its subjectAltName).
template <typename SslStream>
void expect_admin_host(SslStream& stream, const std::string& host) {
  set_server_name(stream.native_handle(), host);
  stream.set_verify_callback(boost::asio::ssl::host_name_verification(host));
}

}  // namespace zctl
