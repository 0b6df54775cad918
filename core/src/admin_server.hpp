// The admin HTTP API (Boost.Beast): /healthz, /readyz, /metrics,
// /v1/events (Server-Sent Events), /v1/sinks.
//
// Threads: everything runs on the io_context the owner passes in, which a
// single thread runs. The only cross-thread entry is consume(), which the
// EventBus calls under its lock; it posts one coalesced wake-up.
//
// Lifecycle: construct -> listen() (binds; throws on failure) -> attach to
// the EventBus -> ... -> detach -> stop() (closes the acceptor and every
// session) -> destroy after the io_context has stopped running.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <vector>
#include <memory>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "zctl/core/event_bus.hpp"

namespace boost::asio::ssl {
class context;
}

namespace zctl {

class ClusterEngine;
class Counter;
struct ClusterView;
class Journal;
class MetricsRegistry;
class SinkHost;
struct TlsConfig;

struct Readiness {
  bool ready = false;
  std::string detail;
};

class AdminServer : public EventConsumer {
 public:
  AdminServer(boost::asio::io_context& io, Journal& journal, MetricsRegistry& metrics, const SinkHost& sinks,
              std::function<Readiness()> readiness, std::string bearer_token);
  ~AdminServer() override;

  // Binds "HOST:PORT" (port 0 = any) and, when `tls` is enabled, serves
  // HTTPS only. Throws TlsSetupError (tls_context.hpp) naming the TLS file
  // that cannot be loaded, std::runtime_error with the address and the
  // system's reason otherwise.
  void listen(const std::string& address, const TlsConfig& tls);
  std::string local_address() const;  // "127.0.0.1:6280", after listen()
  std::string url() const;            // "https://127.0.0.1:6280" with TLS

  // Serves /v1/cluster from `cluster`; `connected` says whether a mesh
  // session with a member is up (any thread). Before the first request.
  void attach_cluster(ClusterEngine& cluster, std::function<bool(const std::string&)> connected);

  void consume(const EventPtr& event) override;
  void stop();

  struct Session;

 private:
  void accept_loop();
  const char* scheme() const { return tls_ ? "https://" : "http://"; }

  boost::asio::io_context& io_;
  Journal& journal_;
  MetricsRegistry& metrics_;
  const SinkHost& sinks_;
  std::function<Readiness()> readiness_;
  std::string bearer_token_;
  ClusterEngine* cluster_ = nullptr;
  std::function<bool(const std::string&)> peer_connected_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // null: plain HTTP
  Counter* tls_failures_ = nullptr;                   // with TLS only
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  std::atomic<bool> wake_posted_{false};
  std::atomic<size_t> open_streams_{0};  // stream_waiters_.size(), readable from consume()'s thread
  bool stopped_ = false;
  // Live sessions and event streams, touched only on the io thread.
  std::set<std::shared_ptr<Session>> sessions_;
  std::set<boost::asio::steady_timer*> stream_waiters_;
};

// Pure helpers, exposed for tests.
struct EventStreamQuery {
  std::vector<std::string> namespaces;
  std::vector<std::string> types;  // globs
  std::optional<uint64_t> since;   // replay events with seq > since
  bool valid = true;
  std::string error;
};
EventStreamQuery parse_event_stream_query(std::string_view target, std::string_view last_event_id);
std::string url_decode(std::string_view text);

// GET /v1/cluster's body for `view`; `connected` as in attach_cluster().
std::string cluster_view_json(const ClusterView& view, const std::function<bool(const std::string&)>& connected);

}  // namespace zctl
