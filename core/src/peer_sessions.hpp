// Which cluster members this node has an authenticated mesh session with,
// in either direction (a member that joined us, or one we dialled), and the
// cluster/peer.connected and peer.disconnected events. Two sessions with
// the same peer (both sides dialled at once) count as one connection: the
// events fire when the first opens and when the last closes.
//
// Threads: any; a mutex guards the table. Events are emitted outside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace zctl {

class EventBus;

class PeerSessions {
 public:
  // `on_lost`: called (outside the lock, on the closing thread) after the
  // last session with a peer closed.
  using LostCallback = std::function<void(const std::string& node_id)>;
  explicit PeerSessions(EventBus& bus, LostCallback on_lost = {}) : bus_(bus), on_lost_(std::move(on_lost)) {}
  PeerSessions(const PeerSessions&) = delete;
  PeerSessions& operator=(const PeerSessions&) = delete;

  // `addr`: where the peer is (its mesh address when known, else the
  // connection's remote address); `version`: the negotiated protocol version.
  void opened(const std::string& node_id, const std::string& addr, unsigned version);
  void closed(const std::string& node_id);
  bool is_up(const std::string& node_id) const;

 private:
  struct Peer {
    unsigned sessions = 0;
    std::string addr;
    unsigned version = 0;
  };
  void emit(const char* type, const std::string& node_id, const Peer& peer);

  EventBus& bus_;
  LostCallback on_lost_;
  mutable std::mutex mutex_;
  std::map<std::string, Peer> peers_;  // guarded by mutex_
};

}  // namespace zctl
