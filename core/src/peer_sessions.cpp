#include "peer_sessions.hpp"

#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"

namespace zctl {

void PeerSessions::opened(const std::string& node_id, const std::string& addr, unsigned version) {
  Peer snapshot;
  {
    std::lock_guard lock(mutex_);
    Peer& peer = peers_[node_id];
    if (peer.sessions++ > 0) return;
    peer.addr = addr;
    peer.version = version;
    snapshot = peer;
  }
  log_info("cluster: peer " + node_id + " connected (" + addr + ")");
  emit("peer.connected", node_id, snapshot);
}

void PeerSessions::closed(const std::string& node_id) {
  Peer snapshot;
  {
    std::lock_guard lock(mutex_);
    const auto it = peers_.find(node_id);
    if (it == peers_.end() || --it->second.sessions > 0) return;
    snapshot = it->second;
    peers_.erase(it);
  }
  log_warn("cluster: peer " + node_id + " disconnected (" + snapshot.addr + ")");
  emit("peer.disconnected", node_id, snapshot);
  if (on_lost_) on_lost_(node_id);
}

bool PeerSessions::is_up(const std::string& node_id) const {
  std::lock_guard lock(mutex_);
  return peers_.count(node_id) != 0;
}

void PeerSessions::emit(const char* type, const std::string& node_id, const Peer& peer) {
  std::string peers = "[{\"id\":";
  json::append_string(peers, node_id);
  peers += ",\"addr\":";
  json::append_string(peers, peer.addr);
  peers += ",\"version\":" + std::to_string(peer.version) + "}]";
  bus_.emit("cluster", type, EventFields().add_raw("peers", peers));
}

}  // namespace zctl
