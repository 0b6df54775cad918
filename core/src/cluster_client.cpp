#include "zctl/core/cluster_client.hpp"

#include <rapidjson/document.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "zctl/core/detail/json_text.hpp"
#include "zctl/core/probe.hpp"  // format_probe_duration

namespace zctl {

namespace {

using Json = rapidjson::Value;

// A string member of a JSON object body, "" when the body is not an object
// or the member is missing or not a string.
std::string body_string(std::string_view body, const char* key) {
  rapidjson::Document doc;
  doc.Parse(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return {};
  const auto it = doc.FindMember(key);
  return it != doc.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString()) : std::string();
}

// Reads members of one JSON object; the first problem is kept in `error`.
class FieldReader {
 public:
  FieldReader(const Json& object, std::string where, std::string& error)
      : object_(object), where_(std::move(where)), error_(error) {}

  const Json* find(const char* key) const {
    const auto it = object_.FindMember(key);
    return it == object_.MemberEnd() ? nullptr : &it->value;
  }

  void string(const char* key, std::string& out, bool required = false) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) {
      if (required) fail(key, "is missing");
      return;
    }
    if (!v->IsString()) return fail(key, "is not a string");
    out.assign(v->GetString(), v->GetStringLength());
  }

  void optional_string(const char* key, std::optional<std::string>& out) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) return;
    if (!v->IsString()) return fail(key, "is not a string or null");
    out.emplace(v->GetString(), v->GetStringLength());
  }

  void boolean(const char* key, bool& out) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) return;
    if (!v->IsBool()) return fail(key, "is not true or false");
    out = v->GetBool();
  }

  void optional_boolean(const char* key, std::optional<bool>& out) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) return;
    if (!v->IsBool()) return fail(key, "is not true, false or null");
    out = v->GetBool();
  }

  void count(const char* key, uint64_t& out) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) return;
    if (!v->IsUint64()) return fail(key, "is not a non-negative integer");
    out = v->GetUint64();
  }

  void seconds(const char* key, std::optional<double>& out) {
    const Json* v = find(key);
    if (v == nullptr || v->IsNull()) return;
    if (!v->IsNumber() || v->GetDouble() < 0) return fail(key, "is not a number of seconds or null");
    out = v->GetDouble();
  }

  void fail(const char* key, const char* what) {
    if (error_.empty()) error_ = where_ + "\"" + key + "\" " + what;
  }

 private:
  const Json& object_;
  std::string where_;
  std::string& error_;
};

std::string seconds_text(const std::optional<double>& seconds) {
  if (!seconds) return "-";
  return format_probe_duration(ProbeDuration(std::llround(*seconds * 1e6)));
}

std::string or_dash(const std::string& text) { return text.empty() ? "-" : text; }

// "node answered 502 Bad Gateway: <body>", the body cut to one short line.
std::string status_text(const AdminHttpResponse& answer) {
  std::string text = "node answered " + std::to_string(answer.status);
  if (!answer.reason.empty()) text += " " + answer.reason;
  std::string body = answer.body.substr(0, 200);
  std::replace(body.begin(), body.end(), '\n', ' ');
  while (!body.empty() && (body.back() == ' ' || body.back() == '\r')) body.pop_back();
  if (!body.empty()) text += ": " + body;
  return text;
}

}  // namespace

std::string_view to_string(ClusterCommand command) {
  switch (command) {
    case ClusterCommand::list:
      return "list";
    case ClusterCommand::add:
      return "add";
    case ClusterCommand::remove:
      return "remove";
    case ClusterCommand::transfer_leadership:
      return "transfer-leadership";
  }
  return "?";
}

AdminHttpRequest build_cluster_request(ClusterCommand command, std::string_view node_id) {
  AdminHttpRequest request;
  switch (command) {
    case ClusterCommand::list:
      request.method = "GET";
      request.target = "/v1/cluster";
      break;
    case ClusterCommand::add:
      request.method = "POST";
      request.target = "/v1/cluster/members";
      request.body = "{\"id\":" + json::quoted(node_id) + "}";
      break;
    case ClusterCommand::remove:
      request.method = "DELETE";
      request.target = "/v1/cluster/members/" + percent_encode(node_id);
      break;
    case ClusterCommand::transfer_leadership:
      request.method = "POST";
      request.target = "/v1/cluster/transfer-leadership";
      request.body = node_id.empty() ? std::string("{}") : "{\"id\":" + json::quoted(node_id) + "}";
      break;
  }
  return request;
}

std::optional<ClusterListing> parse_cluster_listing(std::string_view json, std::string& error) {
  error.clear();
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    error = "the node's answer is not a JSON object";
    return std::nullopt;
  }
  ClusterListing listing;
  FieldReader top(doc, "", error);
  top.string("id", listing.id, true);
  top.string("state", listing.state, true);
  top.count("term", listing.term);
  top.count("commitIndex", listing.commit_index);
  top.boolean("hasLeader", listing.has_leader);
  top.optional_string("leaderId", listing.leader_id);
  top.seconds("lastContactSeconds", listing.last_contact_seconds);
  const Json* members = top.find("members");
  if (members == nullptr || !members->IsArray()) {
    top.fail("members", "is not an array");
  } else {
    for (rapidjson::SizeType i = 0; i < members->Size(); ++i) {
      const Json& m = (*members)[i];
      const std::string where = "members[" + std::to_string(i) + "].";
      if (!m.IsObject()) {
        if (error.empty()) error = where.substr(0, where.size() - 1) + " is not an object";
        break;
      }
      ClusterListing::Member member;
      FieldReader r(m, where, error);
      r.string("id", member.id, true);
      r.string("raftAddr", member.raft_addr);
      r.string("meshAddr", member.mesh_addr);
      r.string("adminAddr", member.admin_addr);
      r.boolean("voter", member.voter);
      r.boolean("leader", member.leader);
      r.optional_boolean("connected", member.connected);
      r.seconds("lastContactSeconds", member.last_contact_seconds);
      listing.members.push_back(std::move(member));
    }
  }
  if (const Json* authorized = top.find("authorized"); authorized != nullptr && !authorized->IsNull()) {
    bool strings = authorized->IsArray();
    for (rapidjson::SizeType i = 0; strings && i < authorized->Size(); ++i) {
      strings = (*authorized)[i].IsString();
      if (strings) listing.authorized.emplace_back((*authorized)[i].GetString(), (*authorized)[i].GetStringLength());
    }
    if (!strings) top.fail("authorized", "is not an array of node ids");
  }
  if (!error.empty()) {
    error = "the node's answer is not a cluster view: " + error;
    return std::nullopt;
  }
  return listing;
}

std::string format_cluster_table(const ClusterListing& listing) {
  std::string out = listing.id + ": " + listing.state + ", term " + std::to_string(listing.term) + ", commit index " +
                    std::to_string(listing.commit_index);
  if (listing.state != "leader") {
    if (listing.leader_id) {
      out += "; leader " + *listing.leader_id;
      if (listing.last_contact_seconds) out += ", last contact " + seconds_text(listing.last_contact_seconds);
    } else {
      out += listing.has_leader ? "; leader unknown" : "; no leader";
    }
  }
  out += "\n\n";
  if (listing.members.empty()) {
    out += "no members\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"ID", "RAFT", "MESH", "VOTER", "LEADER", "CONNECTED", "LAST CONTACT"});
    for (const auto& m : listing.members) {
      const bool self = m.id == listing.id;
      const std::string connected = self ? "self" : !m.connected ? "-" : *m.connected ? "yes" : "no";
      rows.push_back({m.id, or_dash(m.raft_addr), or_dash(m.mesh_addr), m.voter ? "yes" : "no", m.leader ? "yes" : "no",
                      connected, self ? "-" : seconds_text(m.last_contact_seconds)});
    }
    std::vector<size_t> widths(rows.front().size(), 0);
    for (const auto& row : rows) {
      for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    }
    for (const auto& row : rows) {
      std::string line;
      for (size_t c = 0; c < row.size(); ++c) {
        line += row[c];
        if (c + 1 < row.size()) line += std::string(widths[c] - row[c].size() + 2, ' ');
      }
      out += line + "\n";
    }
  }
  if (!listing.authorized.empty()) {
    out += "\nauthorized to join, not members yet:";
    for (size_t i = 0; i < listing.authorized.size(); ++i) out += (i ? ", " : " ") + listing.authorized[i];
    out += "\n";
  }
  return out;
}

std::string describe_cluster_change(ClusterCommand command, std::string_view json) {
  std::string body(json);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  switch (command) {
    case ClusterCommand::add:
      if (const auto id = body_string(json, "authorized"); !id.empty()) {
        return "authorized " + id + " to join: start it with zctl serve --id " + id +
               " --join HOST:PORT (a member's mesh address)";
      }
      break;
    case ClusterCommand::remove: {
      rapidjson::Document doc;
      doc.Parse(json.data(), json.size());
      if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("removed") || !doc["removed"].IsString()) break;
      std::string text = "removed " + std::string(doc["removed"].GetString()) + " from the cluster";
      if (doc.HasMember("index") && doc["index"].IsUint64()) {
        text += " (raft log index " + std::to_string(doc["index"].GetUint64()) + ")";
      }
      return text;
    }
    case ClusterCommand::transfer_leadership:
      if (const auto id = body_string(json, "leaderId"); !id.empty()) return "leadership handed over to " + id;
      break;
    case ClusterCommand::list:
      break;
  }
  return body;
}

ClusterCallResult classify_answer(const AdminHttpResponse& answer) {
  ClusterCallResult result;
  result.status = answer.status;
  result.body = answer.body;
  if (!answer.answered) {
    result.outcome = ClusterOutcome::unreachable;
    result.detail = answer.transport_error;
    return result;
  }
  if (answer.status >= 200 && answer.status < 300) {
    result.outcome = ClusterOutcome::ok;
    return result;
  }
  result.error = body_string(answer.body, "error");
  result.detail = body_string(answer.body, "detail");
  if (result.detail.empty()) result.detail = result.error.empty() ? status_text(answer) : result.error;
  if (answer.status == 400) {
    result.outcome = ClusterOutcome::bad_request;
  } else if ((answer.status >= 300 && answer.status < 500) || answer.status == 503) {
    result.outcome = ClusterOutcome::refused;
  } else {
    result.outcome = ClusterOutcome::failed;
  }
  return result;
}

RedirectDecision decide_redirect(const AdminHttpResponse& answer, const AdminHttpRequest& sent,
                                 bool already_redirected, bool sent_over_https) {
  RedirectDecision decision;
  if (!answer.answered || (answer.status != 307 && answer.status != 308)) return decision;
  std::string why = body_string(answer.body, "detail");
  if (why.empty()) why = "not the leader";
  if (already_redirected) {
    decision.action = RedirectDecision::Action::refuse;
    decision.detail = why + "; the leader it was redirected to redirected again" +
                      (answer.location.empty() ? std::string() : " (to " + answer.location + ")") +
                      ": leadership is changing, try again";
    return decision;
  }
  if (answer.location.empty()) {
    decision.action = RedirectDecision::Action::refuse;
    decision.detail = why + " (and it named no leader to redirect to)";
    return decision;
  }
  try {
    decision.to = parse_http_location(answer.location);
  } catch (const std::invalid_argument& e) {
    decision.action = RedirectDecision::Action::fail;
    decision.detail = std::string("cannot follow the redirect to the leader: ") + e.what();
    return decision;
  }
  if (sent_over_https && !decision.to.address.https) {
    // The request (and its bearer token) would go out in the clear.
    decision.action = RedirectDecision::Action::fail;
    decision.detail = "not following the redirect to " + answer.location + ": it leaves https for plain http";
    return decision;
  }
  if (decision.to.target != sent.target) {
    decision.action = RedirectDecision::Action::fail;
    decision.detail = "not following the redirect to " + answer.location + ": it is not the same request (" +
                      sent.method + " " + sent.target + ")";
    return decision;
  }
  decision.action = RedirectDecision::Action::follow;
  return decision;
}

ClusterCallResult call_cluster_api(const AdminAddress& node, const AdminHttpRequest& request,
                                   const AdminTransport& transport) {
  AdminAddress target = node;
  bool redirected = false;
  std::string leader;  // " ctrl1" once a redirect named it
  for (;;) {
    const AdminHttpResponse answer = transport(target, request);
    const RedirectDecision decision = decide_redirect(answer, request, redirected, target.https);
    if (decision.action == RedirectDecision::Action::follow) {
      if (const auto id = body_string(answer.body, "leaderId"); !id.empty()) leader = " " + id;
      target = decision.to.address;
      redirected = true;
      continue;
    }
    ClusterCallResult result = classify_answer(answer);
    result.answered_by = target.url();
    result.redirected = redirected;
    if (decision.action == RedirectDecision::Action::refuse) {
      result.outcome = ClusterOutcome::refused;
      result.detail = decision.detail;
    } else if (decision.action == RedirectDecision::Action::fail) {
      result.outcome = ClusterOutcome::failed;
      result.detail = decision.detail;
    } else if (result.outcome == ClusterOutcome::unreachable) {
      result.detail = (redirected ? "cannot reach the leader" + leader + " at " + target.url() + " (redirected by " +
                                        node.url() + ")"
                                  : "cannot reach " + target.url()) +
                      ": " + result.detail;
    }
    return result;
  }
}

}  // namespace zctl
