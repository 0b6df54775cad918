#include "tls_context.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include <boost/system/system_error.hpp>

namespace zctl {

namespace ssl = boost::asio::ssl;

ssl::context make_server_tls_context(const TlsConfig& tls, std::string_view key) {
  // OpenSSL's own message for a missing file is unhelpful; say which one.
  for (const std::string* file : {&tls.cert_file, &tls.key_file, &tls.ca_file}) {
    if (!file->empty() && ::access(file->c_str(), R_OK) != 0) {
      throw std::runtime_error(std::string(key) + ": cannot read " + *file + ": " + std::strerror(errno));
    }
  }
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
    throw std::runtime_error(std::string(key) + ": cannot load certificate, key or CA (" + tls.cert_file + ", " +
                             tls.key_file + (tls.ca_file.empty() ? "" : ", " + tls.ca_file) +
                             "): " + e.code().message());
  }
}

}  // namespace zctl
