// The mesh server's pure parts: the shared-timeout deadline queue, the
// accept queue clock, the join token comparison and the configured
// membership. The server itself is exercised through real sockets in
// tests/integration/test_mesh.py.
#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <vector>

#include "accept_queue_clock.hpp"
#include "deadline_queue.hpp"
#include "fake_membership.hpp"
#include "membership.hpp"
#include "mesh_server.hpp"

using namespace std::chrono_literals;
using zctl::AcceptQueueClock;
using zctl::DeadlineHook;
using zctl::DeadlineQueue;

namespace {

struct Tracked : DeadlineHook {
  int id = 0;
};

std::vector<int> expire_all(DeadlineQueue& queue, DeadlineQueue::Clock::time_point now) {
  std::vector<int> ids;
  while (DeadlineHook* hook = queue.pop_expired(now)) ids.push_back(static_cast<Tracked*>(hook)->id);
  return ids;
}

const DeadlineQueue::Clock::time_point t0{};

}  // namespace

TEST_CASE("deadline queue: entries expire in insertion order, exactly at now + timeout", "[mesh]") {
  DeadlineQueue queue(2s);
  Tracked a, b, c;
  a.id = 1, b.id = 2, c.id = 3;
  CHECK(queue.push(a, t0));  // first entry: the owner arms its timer
  CHECK_FALSE(queue.push(b, t0 + 100ms));
  CHECK_FALSE(queue.push(c, t0 + 200ms));
  CHECK(queue.next_deadline() == t0 + 2s);
  CHECK(expire_all(queue, t0 + 2s - 1ns).empty());
  CHECK(expire_all(queue, t0 + 2s + 100ms) == std::vector<int>{1, 2});
  CHECK(queue.next_deadline() == t0 + 2s + 200ms);
  CHECK_FALSE(a.linked());
  CHECK(c.linked());
  CHECK(queue.size() == 1);
}

TEST_CASE("deadline queue: remove from the front, middle and back keeps the rest ordered", "[mesh]") {
  DeadlineQueue queue(1s);
  Tracked e[5];
  for (int i = 0; i < 5; ++i) {
    e[i].id = i;
    queue.push(e[i], t0 + std::chrono::milliseconds(i));
  }
  queue.remove(e[0]);
  queue.remove(e[2]);
  queue.remove(e[4]);
  queue.remove(e[4]);  // twice: a no-op
  CHECK(queue.size() == 2);
  CHECK(queue.next_deadline() == t0 + 1s + 1ms);
  CHECK(expire_all(queue, t0 + 10s) == std::vector<int>{1, 3});
  CHECK(queue.empty());
  CHECK_FALSE(queue.next_deadline().has_value());
}

TEST_CASE("deadline queue: a start older than the back's keeps the order and is never early", "[mesh]") {
  // Nothing in the queue makes a caller's starts rise with the order of
  // insertion.
  DeadlineQueue queue(2s);
  Tracked a, b, c;
  a.id = 1, b.id = 2, c.id = 3;
  queue.push(a, t0 + 30ms);
  CHECK_FALSE(queue.push(b, t0 + 20ms));  // not the front: no re-arm although its own deadline is earlier
  queue.push(c, t0 + 40ms);
  CHECK(expire_all(queue, t0 + 2s + 29ms).empty());  // b is not closed before a
  CHECK(expire_all(queue, t0 + 2s + 30ms) == std::vector<int>{1, 2});
  CHECK(expire_all(queue, t0 + 2s + 40ms) == std::vector<int>{3});

  // b took a's deadline, so the front is always the earliest deadline,
  // whatever leaves the queue first.
  queue.push(a, t0 + 30ms);
  queue.push(b, t0 + 20ms);
  queue.remove(a);
  CHECK(queue.next_deadline() == t0 + 2s + 30ms);
}

TEST_CASE("accept queue clock: a connection starts at the first look that saw it queued", "[mesh]") {
  AcceptQueueClock clock;
  clock.looked(3, t0 + 10ms);  // connections 0, 1, 2 were queued by 10 ms
  clock.looked(5, t0 + 12ms);  // nothing accepted since: 3 and 4 arrived between the looks
  CHECK(clock.accepted(t0 + 20ms) == t0 + 10ms);
  CHECK(clock.accepted(t0 + 21ms) == t0 + 10ms);
  CHECK(clock.accepted(t0 + 22ms) == t0 + 10ms);
  CHECK(clock.accepted(t0 + 23ms) == t0 + 12ms);
  clock.looked(2, t0 + 30ms);  // 4 still queued, and 5 new: 4 keeps its earlier look
  CHECK(clock.accepted(t0 + 31ms) == t0 + 12ms);
  CHECK(clock.accepted(t0 + 32ms) == t0 + 30ms);
  // Arrived after the last look: its accept is all that is known.
  CHECK(clock.accepted(t0 + 40ms) == t0 + 40ms);
}

TEST_CASE("accept queue clock: never earlier than the accept, and no look outlives a drained queue", "[mesh]") {
  AcceptQueueClock clock;
  CHECK(clock.accepted(t0 + 5ms) == t0 + 5ms);  // no look at all
  clock.looked(0, t0 + 6ms);                     // an empty queue says nothing
  CHECK(clock.looks() == 0);

  clock.looked(4, t0 + 10ms);
  CHECK(clock.accepted(t0 + 11ms) == t0 + 10ms);
  // accept() found the queue empty although the look promised three more:
  // a connection left without being accepted, so the count is off. The
  // next connection must not take the old look's time.
  clock.drained();
  CHECK(clock.looks() == 0);
  CHECK(clock.accepted(t0 + 50ms) == t0 + 50ms);
}

TEST_CASE("accept queue clock: a queue shorter than an earlier look promised resets the count", "[mesh]") {
  AcceptQueueClock clock;
  clock.looked(10, t0 + 10ms);  // 0..9 queued by 10 ms
  CHECK(clock.accepted(t0 + 11ms) == t0 + 10ms);
  // One accepted, so 9 should still wait; a look finds 5: four left the
  // queue unseen. Which connection is which is no longer known, so the
  // next ones start at this look, not at the first one's 10 ms.
  clock.looked(5, t0 + 20ms);
  CHECK(clock.accepted(t0 + 21ms) == t0 + 20ms);
  CHECK(clock.looks() == 1);
}

TEST_CASE("deadline queue: touch moves an entry to the back with a fresh deadline", "[mesh]") {
  DeadlineQueue queue(1s);
  Tracked a, b;
  a.id = 1, b.id = 2;
  queue.push(a, t0);
  queue.push(b, t0 + 10ms);
  queue.touch(a, t0 + 500ms);  // activity on a
  CHECK(expire_all(queue, t0 + 1s + 10ms) == std::vector<int>{2});
  CHECK(expire_all(queue, t0 + 1s + 499ms).empty());
  CHECK(expire_all(queue, t0 + 1s + 500ms) == std::vector<int>{1});
}

TEST_CASE("deadline queue: a hook moves between queues without being removed first", "[mesh]") {
  DeadlineQueue pending(30s);
  DeadlineQueue joined(1s);
  Tracked a, b;
  a.id = 1, b.id = 2;
  pending.push(a, t0);
  pending.push(b, t0);
  joined.push(a, t0 + 5s);  // a joined
  CHECK(pending.size() == 1);
  CHECK(joined.size() == 1);
  CHECK(a.queue == &joined);
  CHECK(expire_all(pending, t0 + 30s) == std::vector<int>{2});
  CHECK(expire_all(joined, t0 + 6s) == std::vector<int>{1});
}

TEST_CASE("join tokens: equal tokens match, any difference (content or length) does not", "[mesh]") {
  CHECK(zctl::join_token_matches("s3cret-token", "s3cret-token"));
  CHECK(zctl::join_token_matches("", ""));
  CHECK_FALSE(zctl::join_token_matches("s3cret-tokem", "s3cret-token"));
  CHECK_FALSE(zctl::join_token_matches("s3cret-token ", "s3cret-token"));
  CHECK_FALSE(zctl::join_token_matches("", "s3cret-token"));
  CHECK_FALSE(zctl::join_token_matches("s3cret-token", ""));
}

TEST_CASE("configured membership: allowed nodes join, others are not members", "[mesh]") {
  zctl::ConfiguredMembership membership({"ctrl1", "10.0.0.1:6262", "10.0.0.1:6263", true}, {"ctrl2"});
  std::optional<zctl::JoinDecision> decision;
  membership.decide({"ctrl3", "10.0.0.3:40000", "10.0.0.3:6263"}, [&](zctl::JoinDecision d) { decision = d; });
  REQUIRE(decision);
  CHECK(decision->kind == zctl::JoinDecision::Kind::reject);
  CHECK(decision->reason == "not_member");

  decision.reset();
  membership.decide({"ctrl2", "10.0.0.2:40000", "10.0.0.2:6263"}, [&](zctl::JoinDecision d) { decision = d; });
  REQUIRE(decision);
  REQUIRE(decision->kind == zctl::JoinDecision::Kind::accept);
  CHECK(decision->accepted.leader_id == "ctrl1");
  REQUIRE(decision->accepted.members.size() == 2);
  CHECK(decision->accepted.members[0].id == "ctrl1");
  CHECK(decision->accepted.members[0].voter);
  CHECK(decision->accepted.members[1].id == "ctrl2");
  CHECK(decision->accepted.members[1].raft_addr == "10.0.0.2:6263");

  membership.session_ended("ctrl2");
  CHECK(membership.members().size() == 1);
}

TEST_CASE("configured membership: with no allow-list any node is accepted", "[mesh]") {
  zctl::ConfiguredMembership membership({"ctrl1", "127.0.0.1:6262", "127.0.0.1:6263", true}, {});
  std::optional<zctl::JoinDecision> decision;
  membership.decide({"anyone", "127.0.0.1:5000", "127.0.0.1:7000"}, [&](zctl::JoinDecision d) { decision = d; });
  REQUIRE(decision);
  CHECK(decision->kind == zctl::JoinDecision::Kind::accept);
}
