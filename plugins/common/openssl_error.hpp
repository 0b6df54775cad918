// The oldest queued OpenSSL error as text, for the plugins here that speak
// TLS; clears the queue so the next failure reports its own cause.
#pragma once

#include <openssl/err.h>

#include <string>

namespace zctl::plugins {

inline std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

}  // namespace zctl::plugins
