#include "tls_context.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include <boost/asio/ip/address.hpp>
#include <boost/system/system_error.hpp>
#include <openssl/ssl.h>

namespace zctl {

namespace ssl = boost::asio::ssl;

namespace {

// OpenSSL's own message for a missing file is unhelpful; say which one.
void require_readable(std::initializer_list<const std::string*> files, std::string_view key) {
  for (const std::string* file : files) {
    if (!file->empty() && ::access(file->c_str(), R_OK) != 0) {
      throw TlsSetupError(std::string(key) + ": cannot read " + *file + ": " + std::strerror(errno));
    }
  }
}

}  // namespace

ssl::context make_server_tls_context(const TlsConfig& tls, std::string_view key) {
  require_readable({&tls.cert_file, &tls.key_file, &tls.ca_file}, key);
  try {
    ssl::context context(ssl::context::tls_server);
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    context.use_certificate_chain_file(tls.cert_file);
    context.use_private_key_file(tls.key_file, ssl::context::pem);
    if (!tls.ca_file.empty()) context.load_verify_file(tls.ca_file);
    if (tls.require_client_cert) {
      context.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    } else if (!tls.ca_file.empty()) {
      context.set_verify_mode(ssl::verify_peer);
    }
    return context;
  } catch (const boost::system::system_error& e) {
    throw TlsSetupError(std::string(key) + ": cannot load certificate, key or CA (" + tls.cert_file + ", " +
                             tls.key_file + (tls.ca_file.empty() ? "" : ", " + tls.ca_file) +
                             "): " + e.code().message());
  }
}

ssl::context make_client_tls_context(const TlsClientFiles& files, ServerCheck check, std::string_view key) {
  require_readable({&files.ca_file, &files.cert_file, &files.key_file}, key);
  if (files.cert_file.empty() != files.key_file.empty()) {
    throw TlsSetupError(std::string(key) + ": a client certificate needs both its certificate and its key file");
  }
  try {
    ssl::context context(ssl::context::tls_client);
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    if (!files.ca_file.empty()) {
      context.load_verify_file(files.ca_file);
      context.set_verify_mode(ssl::verify_peer);
    } else if (check == ServerCheck::always) {
      context.set_default_verify_paths();
      context.set_verify_mode(ssl::verify_peer);
    }
    if (!files.cert_file.empty()) {
      context.use_certificate_chain_file(files.cert_file);
      context.use_private_key_file(files.key_file, ssl::context::pem);
    }
    return context;
  } catch (const boost::system::system_error& e) {
    throw TlsSetupError(std::string(key) + ": cannot load the CA, certificate or key (" + files.ca_file + ", " +
                        files.cert_file + ", " + files.key_file + "): " + e.code().message());
  }
}

void set_server_name(void* ssl_native_handle, const std::string& host) {
  boost::system::error_code not_an_address;
  boost::asio::ip::make_address(host, not_an_address);
  if (not_an_address) SSL_set_tlsext_host_name(static_cast<SSL*>(ssl_native_handle), host.c_str());
}

}  // namespace zctl
