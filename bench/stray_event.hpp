// The event the benchmarks send: a stray connection report, the most
// frequent kind, 374 bytes serialised, with 4096 distinct peer addresses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zctl/core/event.hpp"

namespace zctl::bench {

// Peer addresses as a connection object would hold them: formatted once per
// connection, not per event.
inline const std::vector<std::string>& remote_addresses() {
  static const std::vector<std::string> addresses = [] {
    std::vector<std::string> out;
    for (int i = 0; i < 4096; ++i) {
      out.push_back("10.20." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255) + ":51234");
    }
    return out;
  }();
  return addresses;
}

// A realistic event: a stray connection report, the most frequent kind.
inline EventFields stray_fields(uint64_t i) {
  EventFields f;
  f.add("remoteAddr", remote_addresses()[i % remote_addresses().size()])
      .add("localAddr", "10.0.0.1:6262")
      .add("connectedAt", "2025-01-10T13:54:18.151522421-05:00")
      .add("pendingStep", "hello")
      .add_null("protocolVersion")
      .add("nodeId", "ctrl-candidate-7")
      .add("graceMs", int64_t{30000})
      .add("action", "disconnect")
      .add("bytesIn", uint64_t{0});
  return f;
}

}  // namespace zctl::bench
