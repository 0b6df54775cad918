#include "cluster_state.hpp"

#include <sstream>
#include <vector>

namespace zctl {

namespace {

// libraft 0.15's on-disk batches assume 8-byte aligned entry payloads: an
// unpadded entry is written fine and then cannot be read back on restart.
std::string padded(std::string text) {
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

std::vector<std::string> words(std::string_view line) {
  std::vector<std::string> out;
  std::istringstream in{std::string(line)};
  for (std::string w; in >> w;) out.push_back(std::move(w));
  return out;
}

std::optional<uint64_t> number(const std::string& text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

std::string dash_if_empty(const std::string& s) { return s.empty() ? "-" : s; }
std::string empty_if_dash(const std::string& s) { return s == "-" ? std::string() : s; }

}  // namespace

std::string ClusterState::encode_announce(const LeaderAnnounce& a) {
  return padded("zctl-announce " + std::to_string(a.term) + " " + std::to_string(a.raft_id) + " " + a.node_id);
}

std::string ClusterState::encode_member(const MemberRecord& m) {
  return padded("zctl-member " + m.node_id + " " + std::to_string(m.raft_id) + " " + m.raft_addr + " " +
                dash_if_empty(m.mesh_addr) + " " + dash_if_empty(m.admin_addr));
}

std::string ClusterState::encode_allow(std::string_view node_id) { return padded("zctl-allow " + std::string(node_id)); }
std::string ClusterState::encode_forget(std::string_view node_id) {
  return padded("zctl-forget " + std::string(node_id));
}

bool ClusterState::apply(std::string_view entry) {
  const auto w = words(entry);
  if (w.empty()) return false;
  if (w[0] == "zctl-announce" && w.size() == 4) {
    const auto term = number(w[1]);
    const auto id = number(w[2]);
    if (!term || !id) return false;
    announce_ = {*term, *id, w[3]};
    return true;
  }
  if (w[0] == "zctl-member" && w.size() == 6) {
    const auto id = number(w[2]);
    if (!id) return false;
    members_[w[1]] = MemberRecord{w[1], *id, w[3], empty_if_dash(w[4]), empty_if_dash(w[5])};
    allowed_.erase(w[1]);  // a member needs no pre-authorisation any more
    return true;
  }
  if (w[0] == "zctl-allow" && w.size() == 2) {
    if (members_.count(w[1]) == 0) allowed_.insert(w[1]);
    return true;
  }
  if (w[0] == "zctl-forget" && w.size() == 2) {
    members_.erase(w[1]);
    allowed_.erase(w[1]);
    return true;
  }
  return false;
}

std::string ClusterState::snapshot() const {
  std::string out;
  if (announce_.term != 0) out += encode_announce(announce_) + "\n";
  for (const auto& [id, m] : members_) out += encode_member(m) + "\n";
  for (const auto& id : allowed_) out += encode_allow(id) + "\n";
  return padded(std::move(out));
}

void ClusterState::restore(std::string_view snapshot) {
  announce_ = {};
  members_.clear();
  allowed_.clear();
  while (!snapshot.empty()) {
    const size_t end = snapshot.find('\n');
    apply(snapshot.substr(0, end));
    if (end == std::string_view::npos) break;
    snapshot.remove_prefix(end + 1);
  }
}

const MemberRecord* ClusterState::member(const std::string& node_id) const {
  const auto it = members_.find(node_id);
  return it == members_.end() ? nullptr : &it->second;
}

const MemberRecord* ClusterState::member_by_raft_id(uint64_t raft_id) const {
  for (const auto& [id, m] : members_) {
    if (m.raft_id == raft_id) return &m;
  }
  return nullptr;
}

}  // namespace zctl
