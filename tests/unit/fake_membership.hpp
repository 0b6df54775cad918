// A membership authority for mesh server tests: answers from a fixed list
// of allowed ids (empty: anyone), as a single-node leader would, without
// Raft. Thread-safe.
#pragma once

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "membership.hpp"

namespace zctl {

class ConfiguredMembership final : public MembershipAuthority {
 public:
  // `allowed_nodes` empty: every node that presents the join token may join.
  ConfiguredMembership(mesh::Member self, std::vector<std::string> allowed_nodes)
      : self_(std::move(self)), allowed_nodes_(std::move(allowed_nodes)) {}

  // The address peers reach this node's mesh port at, once it is bound
  // (the configured one may say port 0).
  void set_mesh_address(std::string address);

  void decide(const JoinRequest& request, DecisionCallback done) override;
  void session_ended(const std::string& node_id) override;

  // This node and every node joined through it, by id.
  std::vector<mesh::Member> members() const;

 private:
  mesh::Member self_;  // guarded by mutex_
  const std::vector<std::string> allowed_nodes_;
  mutable std::mutex mutex_;
  std::map<std::string, mesh::Member> joined_;  // guarded by mutex_
};

inline void ConfiguredMembership::set_mesh_address(std::string address) {
  std::lock_guard lock(mutex_);
  self_.mesh_addr = std::move(address);
}

inline void ConfiguredMembership::decide(const JoinRequest& request, DecisionCallback done) {
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

inline void ConfiguredMembership::session_ended(const std::string& node_id) {
  std::lock_guard lock(mutex_);
  joined_.erase(node_id);
}

inline std::vector<mesh::Member> ConfiguredMembership::members() const {
  std::lock_guard lock(mutex_);
  std::vector<mesh::Member> all{self_};
  for (const auto& [id, member] : joined_) {
    if (all.size() >= mesh::kMaxMembers) break;
    all.push_back(member);
  }
  return all;
}

}  // namespace zctl
