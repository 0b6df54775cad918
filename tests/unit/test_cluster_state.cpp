#include <catch2/catch.hpp>

#include "cluster_state.hpp"

using zctl::ClusterState;
using zctl::LeaderAnnounce;
using zctl::MemberRecord;

TEST_CASE("cluster state: entries are padded to 8 bytes and applied in order", "[cluster_state]") {
  ClusterState state;
  const std::string announce = ClusterState::encode_announce({7, 12345, "ctrl1"});
  CHECK(announce.size() % 8 == 0);
  CHECK(state.apply(announce));
  CHECK(state.last_announce() == LeaderAnnounce{7, 12345, "ctrl1"});

  const MemberRecord ctrl2{"ctrl2", 99, "10.0.0.2:6263", "10.0.0.2:6262", ""};
  CHECK(state.apply(ClusterState::encode_allow("ctrl2")));
  CHECK(state.allowed().count("ctrl2") == 1);
  CHECK(state.apply(ClusterState::encode_member(ctrl2)));
  REQUIRE(state.member("ctrl2") != nullptr);
  CHECK(*state.member("ctrl2") == ctrl2);  // "" survives as "-" on the wire
  CHECK(state.member_by_raft_id(99) == state.member("ctrl2"));
  CHECK(state.allowed().empty());  // a member needs no pre-authorisation

  CHECK(state.apply(ClusterState::encode_forget("ctrl2")));
  CHECK(state.member("ctrl2") == nullptr);
  CHECK(state.apply(ClusterState::encode_allow("ctrl2")));  // may be added again
  CHECK(state.allowed().count("ctrl2") == 1);
}

TEST_CASE("cluster state: foreign or malformed entries change nothing", "[cluster_state]") {
  ClusterState state;
  state.apply(ClusterState::encode_announce({3, 1, "a"}));
  CHECK_FALSE(state.apply("some other application's entry"));
  CHECK_FALSE(state.apply("zctl-announce x 1 b"));
  CHECK_FALSE(state.apply("zctl-announce 4 1"));
  CHECK_FALSE(state.apply("zctl-member ctrl2 notanumber a:1 - -"));
  CHECK_FALSE(state.apply(""));
  CHECK(state.last_announce() == LeaderAnnounce{3, 1, "a"});
  CHECK(state.members().empty());
}

TEST_CASE("cluster state: a snapshot restores everything, and the old single-announce form still loads",
          "[cluster_state]") {
  ClusterState state;
  state.apply(ClusterState::encode_announce({9, 5, "ctrl3"}));
  state.apply(ClusterState::encode_member({"ctrl1", 1, "10.0.0.1:6263", "10.0.0.1:6262", "10.0.0.1:6280"}));
  state.apply(ClusterState::encode_member({"ctrl3", 5, "10.0.0.3:6263", "", ""}));
  state.apply(ClusterState::encode_allow("ctrl4"));
  const std::string snapshot = state.snapshot();
  CHECK(snapshot.size() % 8 == 0);

  ClusterState restored;
  restored.apply(ClusterState::encode_allow("stale"));
  restored.restore(snapshot);
  CHECK(restored.last_announce() == state.last_announce());
  CHECK(restored.members() == state.members());
  CHECK(restored.allowed() == state.allowed());

  // Snapshots written before membership records were one padded announce.
  ClusterState old;
  old.restore(ClusterState::encode_announce({2, 8, "ctrl1"}));
  CHECK(old.last_announce() == LeaderAnnounce{2, 8, "ctrl1"});
  CHECK(old.members().empty());
}
