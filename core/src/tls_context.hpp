// TLS contexts. The server side, for the mesh port and the admin API, is
// built from their `tls` settings: TLS 1.2 or later, the certificate chain
// and key, and client-certificate verification against `ca_file` (required
// when `require_client_cert`). The client side serves the mesh dialer and
// the admin clients (`zctl watch`, `zctl cluster`). Built once before use;
// then only read.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>

#include "zctl/core/admin_http.hpp"
#include "zctl/core/config.hpp"

namespace zctl {

// The files a TLS setting names cannot be read or loaded: a configuration
// problem (the node exits 1), unlike an address that cannot be bound. The
// message starts with the setting's key ("mesh.tls") and names the file.
class TlsSetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws TlsSetupError.
boost::asio::ssl::context make_server_tls_context(const TlsConfig& tls, std::string_view key);

// Which servers a client accepts.
enum class ServerCheck {
  // Those whose certificate `ca_file` signed; with no `ca_file`, any (the
  // mesh with require_client_cert: false and no CA).
  ca_file_if_given,
  // Always checked: against `ca_file`, or the system's trust store.
  always,
};

// Presents the client certificate when one is given. Throws TlsSetupError
// starting with `key`. A stream that checks the server's name also needs
// expect_server_name().
boost::asio::ssl::context make_client_tls_context(const TlsClientFiles& files, ServerCheck check,
                                                  std::string_view key);

// Sends `host` as SNI unless it is an IP address (RFC 6066: names only).
void set_server_name(void* ssl_native_handle, const std::string& host);

// One client stream: SNI, and the server's certificate must name `host` (a
// DNS name, or an IP address in its subjectAltName).
template <typename SslStream>
void expect_server_name(SslStream& stream, const std::string& host) {
  set_server_name(stream.native_handle(), host);
  stream.set_verify_callback(boost::asio::ssl::host_name_verification(host));
}

}  // namespace zctl
