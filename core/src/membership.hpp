// Who may join the cluster: the one decision the mesh handshake delegates.
//
// The mesh server checks the protocol, the cluster id, the join token and
// duplicate ids itself, then asks a MembershipAuthority whether this node id
// becomes a member. The answer may take time (a Raft configuration change),
// so it comes back through a callback.
//
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mesh_protocol.hpp"

namespace zctl {

struct JoinRequest {
  std::string node_id;
  std::string remote_addr;  // where the connection came from, "10.0.0.9:51234"
  std::string raft_addr;    // from the join message
  std::string mesh_addr{};   // from the join message: where its mesh port is, "-" or "" unknown
  std::string admin_addr{};  // from the join message: where its admin API is, "-" or "" unknown
  unsigned version = 0;      // the negotiated protocol version
};

struct JoinDecision {
  enum class Kind { accept, reject, redirect };
  Kind kind = Kind::reject;
  mesh::Accepted accepted;  // kind == accept
  std::string reason;       // kind == reject: a protocol reason (not_member, no_leader, ...)
  std::string detail;       // kind == reject: for humans
  mesh::Redirect redirect;  // kind == redirect

  static JoinDecision accept(mesh::Accepted accepted);
  static JoinDecision reject(std::string reason, std::string detail);
  static JoinDecision redirect_to(mesh::Redirect redirect);
};

class MembershipAuthority {
 public:
  using DecisionCallback = std::function<void(JoinDecision)>;

  virtual ~MembershipAuthority() = default;

  // Decides a join whose token and id were already checked. `done` is
  // called exactly once, on any thread, possibly before decide() returns.
  virtual void decide(const JoinRequest& request, DecisionCallback done) = 0;

  // A session accepted through decide() has ended.
  virtual void session_ended(const std::string& node_id) = 0;
};

class ClusterEngine;
class PeerSessions;

// RaftMembership: the cluster engine decides (a member's new session is
// accepted at once; the leader adds a new node to the Raft configuration;
// a follower redirects to the leader), and every accepted session is
// counted in PeerSessions until it ends.
class RaftMembership final : public MembershipAuthority {
 public:
  RaftMembership(ClusterEngine& engine, PeerSessions& peers) : engine_(engine), peers_(peers) {}
  void decide(const JoinRequest& request, DecisionCallback done) override;
  void session_ended(const std::string& node_id) override;

 private:
  ClusterEngine& engine_;
  PeerSessions& peers_;
};


}  // namespace zctl
