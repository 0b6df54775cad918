// Client side of the cluster membership API, used by `zctl cluster`:
// GET /v1/cluster, POST /v1/cluster/members, DELETE /v1/cluster/members/{id}
// and POST /v1/cluster/transfer-leadership.
//
// Everything here but call_cluster_api is pure: building requests, reading
// the node's JSON, the table, and what to make of an answer (follow a
// redirect to the leader or not, success or which kind of failure), so it is
// tested without sockets. call_cluster_api blocks on the calling thread; its
// transport is a parameter so tests can script the nodes' answers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/admin_http.hpp"

namespace zctl {

enum class ClusterCommand { list, add, remove, transfer_leadership };

// "list", "add", "remove", "transfer-leadership": the subcommand's name.
std::string_view to_string(ClusterCommand command);

// The request for one command. `node_id` is the member to add or remove, or
// the leadership transfer's target ("" = let the leader choose).
AdminHttpRequest build_cluster_request(ClusterCommand command, std::string_view node_id);

// The answering node's view of the cluster as GET /v1/cluster reports it:
// the client's reading of the JSON (the node's own structure is
// ClusterView in src/cluster_engine.hpp, a different type).
struct ClusterListing {
  struct Member {
    std::string id;
    std::string raft_addr;
    std::string mesh_addr;   // "" when unknown
    std::string admin_addr;  // "" when unknown
    bool voter = false;
    bool leader = false;
    std::optional<bool> connected;  // a mesh session with it is up; nullopt for the answering node itself
    std::optional<double> last_contact_seconds;
  };

  std::string id;     // the answering node
  std::string state;  // leader, follower, candidate or unavailable
  uint64_t term = 0;
  uint64_t commit_index = 0;
  bool has_leader = false;
  std::optional<std::string> leader_id;  // nullopt without a validated leader
  std::optional<double> last_contact_seconds;
  std::vector<Member> members;
  std::vector<std::string> authorized;  // may join, not members yet
};

// Reads a GET /v1/cluster body. nullopt, with `error` saying what is wrong,
// when it is not a cluster listing.
std::optional<ClusterListing> parse_cluster_listing(std::string_view json, std::string& error);

// `zctl cluster list -o table`: a summary line, then one row per member with
// ID, RAFT, MESH, VOTER, LEADER, CONNECTED ("self" for the answering node)
// and LAST CONTACT, then the authorized ids. Ends with a newline.
std::string format_cluster_table(const ClusterListing& listing);

// One line for a successful add, remove or transfer-leadership answer, e.g.
// "removed ctrl3 from the cluster (raft log index 57)"; the body itself when
// it is not the expected JSON. No newline.
std::string describe_cluster_change(ClusterCommand command, std::string_view json);

// How a call ended; `zctl cluster` maps each to an exit status.
enum class ClusterOutcome {
  ok,           // 2xx
  refused,      // the node said no: 4xx (but 400), 503 no_leader, not the leader after one redirect
  bad_request,  // 400: the node found the request malformed (for example an invalid node id)
  unreachable,  // no answer from the node, or from the leader it redirected to
  failed,       // anything else: 5xx but 503, an unusable redirect or answer
};

struct ClusterCallResult {
  ClusterOutcome outcome = ClusterOutcome::failed;
  int status = 0;           // of the last answer, 0 without one
  std::string body;         // of the last answer
  std::string error;        // the node's "error" code, "" when none
  std::string detail;       // why, when not ok: the node's "detail", else what went wrong
  std::string answered_by;  // URL of the node that gave the last answer (or was tried last)
  bool redirected = false;  // answered by the leader after a redirect
};

// Outcome, error and detail of one answer, as if it were the last.
ClusterCallResult classify_answer(const AdminHttpResponse& answer);

// What to do with an answer to `sent`: accept it as it is, follow a 307/308
// to `to` (re-sending the same request), or refuse it with `detail`. Only
// one redirect is followed, to an absolute http(s) URL with the same target,
// and never from https (`sent_over_https`) to plain http.
struct RedirectDecision {
  enum class Action { accept, follow, refuse, fail } action = Action::accept;
  HttpLocation to;     // when following
  std::string detail;  // when refusing or failing
};
RedirectDecision decide_redirect(const AdminHttpResponse& answer, const AdminHttpRequest& sent,
                                 bool already_redirected, bool sent_over_https = false);

using AdminTransport = std::function<AdminHttpResponse(const AdminAddress&, const AdminHttpRequest&)>;

// Sends `request` to `node`; a node that is not the leader redirects, and the
// same method, body and token go once to the leader it names.
ClusterCallResult call_cluster_api(const AdminAddress& node, const AdminHttpRequest& request,
                                   const AdminTransport& transport = send_admin_request);

}  // namespace zctl
