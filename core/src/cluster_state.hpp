// The cluster's replicated state machine: what every node learns by
// applying the Raft log, in log order.
//
// Entries are short text lines (padded to 8 bytes, see encode()):
//   zctl-announce <term> <raft id> <node id>   a leader's first entry of its term
//   zctl-member <node id> <raft id> <raft addr> <mesh addr|-> <admin addr|->
//                                              where a member is reached
//   zctl-allow <node id>                       pre-authorised to join
//   zctl-forget <node id>                      removed: drop its record
// Unknown lines are ignored, so an older node applies a newer log.
//
// Raft's own configuration says who votes; this says where members are
// reached (mesh, admin) and which leader announced itself for which term.
//
// Pure: no raft, no clock. Not thread-safe (the raft loop thread owns it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace zctl {

struct LeaderAnnounce {
  uint64_t term = 0;
  uint64_t raft_id = 0;
  std::string node_id;
  bool operator==(const LeaderAnnounce&) const = default;
};

struct MemberRecord {
  std::string node_id;
  uint64_t raft_id = 0;
  std::string raft_addr;
  std::string mesh_addr;   // "" when unknown
  std::string admin_addr;  // "" when unknown
  bool operator==(const MemberRecord&) const = default;
};

class ClusterState {
 public:
  static std::string encode_announce(const LeaderAnnounce& announce);
  static std::string encode_member(const MemberRecord& member);
  static std::string encode_allow(std::string_view node_id);
  static std::string encode_forget(std::string_view node_id);

  // Applies one entry; false when it is not one of ours (ignored).
  bool apply(std::string_view entry);

  // The whole state as one buffer (entries, one per line) and back.
  std::string snapshot() const;
  void restore(std::string_view snapshot);

  const LeaderAnnounce& last_announce() const { return announce_; }
  const std::map<std::string, MemberRecord>& members() const { return members_; }
  const std::set<std::string>& allowed() const { return allowed_; }
  const MemberRecord* member(const std::string& node_id) const;
  const MemberRecord* member_by_raft_id(uint64_t raft_id) const;

 private:
  LeaderAnnounce announce_;
  std::map<std::string, MemberRecord> members_;
  std::set<std::string> allowed_;
};

}  // namespace zctl
