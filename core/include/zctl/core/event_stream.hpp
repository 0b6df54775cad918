// Client side of GET /v1/events (Server-Sent Events), used by `zctl watch`.
//
// SseParser is pure and incremental (bytes in, messages out), tested without
// sockets. EventStreamClient connects, follows the stream, and on a dropped
// connection reconnects with backoff, resuming after the last seq it
// delivered, so the caller sees no gap it is not told about and no duplicate.
// Single-threaded; run() blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/admin_http.hpp"

namespace zctl {

struct SseMessage {
  std::string id;
  std::string event;  // "" when the message had no event: line
  std::string data;   // data lines joined with '\n'
};

class SseParser {
 public:
  // Consumes bytes (any split); appends every completed message to `out`.
  void feed(std::string_view bytes, std::vector<SseMessage>& out);
  // The last id: line seen, dispatched with an event or not ("" if none).
  const std::string& last_id() const { return current_.id; }

 private:
  void line(std::string_view text, std::vector<SseMessage>& out);
  std::string partial_;
  SseMessage current_;
  bool has_data_ = false;
};

struct EventStreamOptions {
  std::string node_url = "http://127.0.0.1:6280";
  std::vector<std::string> namespaces;
  std::vector<std::string> types;
  std::optional<uint64_t> since;
  std::string bearer_token;
  TlsClientFiles tls;  // for an https node URL
};

// What the caller is told besides events.
struct StreamNotice {
  enum class Kind { connected, disconnected, gap, overflow } kind;
  std::string detail;
};

class EventStreamClient {
 public:
  // Parses node_url; throws std::invalid_argument with a readable reason.
  explicit EventStreamClient(EventStreamOptions options);

  // Streams until on_event returns false. Returns 0 then; returns 3 when the
  // node cannot be reached on the first attempt (later drops reconnect with
  // backoff forever). on_event gets (seq, json).
  int run(const std::function<bool(uint64_t, const std::string&)>& on_event,
          const std::function<void(const StreamNotice&)>& on_notice);

  // Builds the request target, e.g. "/v1/events?namespace=node&since=41".
  std::string request_target(std::optional<uint64_t> after) const;

 private:
  EventStreamOptions options_;
  std::string host_;
  std::string port_;
  bool https_ = false;
};

// One readable line for `zctl watch -o table`: local time, namespace, type
// and the event's own fields as key=value. `color` adds ANSI colours.
std::string format_event_line(const std::string& json, bool color);

}  // namespace zctl
