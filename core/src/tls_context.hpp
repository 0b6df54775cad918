// The server side of TLS for the mesh port and the admin API, built from
// their `tls` settings: TLS 1.2 or later, the certificate chain and key, and
// client-certificate verification against `ca_file` (required when
// `require_client_cert`). Built once at start-up; the context is then only
// read, from the owner's io thread.
#pragma once

#include <string_view>

#include <boost/asio/ssl/context.hpp>

#include "zctl/core/config.hpp"

namespace zctl {

// Throws std::runtime_error that starts with `key` ("mesh.tls") and names
// the file that cannot be read or loaded.
boost::asio::ssl::context make_server_tls_context(const TlsConfig& tls, std::string_view key);

}  // namespace zctl
