#include "membership.hpp"

#include <algorithm>
#include <utility>

#include "cluster_engine.hpp"
#include "peer_sessions.hpp"

namespace zctl {

JoinDecision JoinDecision::accept(mesh::Accepted accepted) {
  JoinDecision d;
  d.kind = Kind::accept;
  d.accepted = std::move(accepted);
  return d;
}

JoinDecision JoinDecision::reject(std::string reason, std::string detail) {
  JoinDecision d;
  d.kind = Kind::reject;
  d.reason = std::move(reason);
  d.detail = std::move(detail);
  return d;
}

JoinDecision JoinDecision::redirect_to(mesh::Redirect redirect) {
  JoinDecision d;
  d.kind = Kind::redirect;
  d.redirect = std::move(redirect);
  return d;
}

void RaftMembership::decide(const JoinRequest& request, DecisionCallback done) {
  engine_.join(request, [this, request, done = std::move(done)](JoinDecision decision) {
    if (decision.kind == JoinDecision::Kind::accept) {
      const bool advertised = !request.mesh_addr.empty() && request.mesh_addr != "-";
      peers_.opened(request.node_id, advertised ? request.mesh_addr : request.remote_addr, request.version);
    }
    done(std::move(decision));
  });
}

void RaftMembership::session_ended(const std::string& node_id) { peers_.closed(node_id); }

ConfiguredMembership::ConfiguredMembership(mesh::Member self, std::vector<std::string> allowed_nodes)
    : self_(std::move(self)), allowed_nodes_(std::move(allowed_nodes)) {}

void ConfiguredMembership::set_mesh_address(std::string address) {
  std::lock_guard lock(mutex_);
  self_.mesh_addr = std::move(address);
}

void ConfiguredMembership::decide(const JoinRequest& request, DecisionCallback done) {
  if (!allowed_nodes_.empty() &&
      std::find(allowed_nodes_.begin(), allowed_nodes_.end(), request.node_id) == allowed_nodes_.end()) {
    done(JoinDecision::reject("not_member", "node " + request.node_id + " is not in cluster.allowed_nodes"));
    return;
  }
  mesh::Accepted accepted;
  accepted.leader_id = self_.id;  // immutable after construction
  {
    std::lock_guard lock(mutex_);
    // The joiner's mesh port is unknown until it says so (the cluster
    // engine learns it); its connection's address is what we know.
    joined_[request.node_id] = mesh::Member{request.node_id, request.remote_addr, request.raft_addr, false};
  }
  accepted.members = members();
  done(JoinDecision::accept(std::move(accepted)));
}

void ConfiguredMembership::session_ended(const std::string& node_id) {
  std::lock_guard lock(mutex_);
  joined_.erase(node_id);
}

std::vector<mesh::Member> ConfiguredMembership::members() const {
  std::lock_guard lock(mutex_);
  std::vector<mesh::Member> all{self_};
  for (const auto& [id, member] : joined_) {
    if (all.size() >= mesh::kMaxMembers) break;
    all.push_back(member);
  }
  return all;
}

}  // namespace zctl
