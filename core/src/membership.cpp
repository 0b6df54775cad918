#include "membership.hpp"

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
    // Observers (joins without advertised addresses) are not peers.
    if (decision.kind == JoinDecision::Kind::accept && !request.mesh_addr.empty()) {
      peers_.opened(request.node_id, request.mesh_addr != "-" ? request.mesh_addr : request.remote_addr,
                    request.version);
    }
    done(std::move(decision));
  });
}

void RaftMembership::session_ended(const std::string& node_id) {
  peers_.closed(node_id);  // nothing for an observer: it was never opened
}

}  // namespace zctl
