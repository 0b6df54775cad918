// The debounce of cluster/state.has_leader and state.is_leaderless: one
// announcement per lasting transition, flaps counted, nothing doubled at
// start-up. Virtual time: every test passes `now` explicitly.
#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "leader_state.hpp"

using namespace std::chrono_literals;
using zctl::LeaderAnnouncement;
using zctl::LeaderObservation;
using zctl::LeaderStateTracker;
using Kind = LeaderAnnouncement::Kind;

namespace {

const LeaderStateTracker::Clock::time_point t0{};

LeaderObservation leader(const std::string& id, uint64_t term) { return {term, id}; }
LeaderObservation none(uint64_t term) { return {term, std::nullopt}; }

// Feeds one observation per millisecond from `from` for `length`, and
// collects what was announced as "has:<id>@<term>" / "none(<last>)@<term>".
std::vector<std::string> run(LeaderStateTracker& tracker, LeaderStateTracker::Clock::time_point from,
                             std::chrono::milliseconds length, const LeaderObservation& observation) {
  std::vector<std::string> out;
  for (auto now = from; now < from + length; now += 1ms) {
    if (auto a = tracker.observe(now, observation)) {
      out.push_back(a->kind == Kind::has_leader
                        ? "has:" + a->leader_id + "@" + std::to_string(a->term)
                        : "none(" + a->last_leader_id.value_or("-") + ")@" + std::to_string(a->term));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("leader state: the first state is announced once it held for the window, never a pair", "[leader]") {
  LeaderStateTracker tracker(300ms);
  // Boot: leaderless for 100 ms, then a leader. Only has_leader is announced.
  CHECK(run(tracker, t0, 100ms, none(0)).empty());
  CHECK(run(tracker, t0 + 100ms, 299ms, leader("a", 1)).empty());
  CHECK_FALSE(tracker.announced());
  CHECK(run(tracker, t0 + 399ms, 10ms, leader("a", 1)) == std::vector<std::string>{"has:a@1"});
  CHECK(tracker.announced_leader() == std::optional<std::string>("a"));
  CHECK(tracker.leader_changes() == 1);
  CHECK(tracker.flaps_suppressed() == 0);  // nothing was announced before: not a flap
}

TEST_CASE("leader state: a flap shorter than the window is counted, not announced", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  CHECK(run(tracker, t0 + 400ms, 299ms, none(1)).empty());
  CHECK(run(tracker, t0 + 699ms, 1000ms, leader("a", 1)).empty());
  CHECK(tracker.flaps_suppressed() == 1);
  CHECK(tracker.announced_leader() == std::optional<std::string>("a"));
}

TEST_CASE("leader state: a loss longer than the window gives one is_leaderless, then one has_leader", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  const auto lost = run(tracker, t0 + 400ms, 1000ms, none(2));
  CHECK(lost == std::vector<std::string>{"none(a)@2"});
  const auto won = run(tracker, t0 + 1400ms, 1000ms, leader("b", 3));
  CHECK(won == std::vector<std::string>{"has:b@3"});
  CHECK(tracker.leader_changes() == 2);
  CHECK(tracker.flaps_suppressed() == 0);
}

TEST_CASE("leader state: A -> none -> B inside the window announces only B", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  CHECK(run(tracker, t0 + 400ms, 100ms, none(2)).empty());
  CHECK(run(tracker, t0 + 500ms, 500ms, leader("b", 2)) == std::vector<std::string>{"has:b@2"});
  CHECK(tracker.flaps_suppressed() == 1);  // the short leaderless spell
}

TEST_CASE("leader state: the same leader re-elected in a new term is not a transition", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  CHECK(run(tracker, t0 + 400ms, 1000ms, leader("a", 2)).empty());
  CHECK(tracker.leader_changes() == 1);
}

TEST_CASE("leader state: a leader change that lasts is announced once, with the new term", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  CHECK(run(tracker, t0 + 400ms, 2000ms, leader("b", 2)) == std::vector<std::string>{"has:b@2"});
}

TEST_CASE("leader state: flapping between two leaders faster than the window announces nothing", "[leader]") {
  LeaderStateTracker tracker(300ms);
  run(tracker, t0, 400ms, leader("a", 1));
  std::vector<std::string> all;
  auto now = t0 + 400ms;
  for (int i = 0; i < 10; ++i) {
    for (auto& e : run(tracker, now, 100ms, leader("b", 2))) all.push_back(e);
    now += 100ms;
    for (auto& e : run(tracker, now, 100ms, leader("a", 3))) all.push_back(e);
    now += 100ms;
  }
  CHECK(all.empty());
  CHECK(tracker.flaps_suppressed() == 10);
}

TEST_CASE("leader state: next_check says when a pending state becomes due", "[leader]") {
  LeaderStateTracker tracker(300ms);
  CHECK_FALSE(tracker.next_check().has_value());
  CHECK_FALSE(tracker.observe(t0 + 5ms, leader("a", 1)).has_value());
  REQUIRE(tracker.next_check().has_value());
  CHECK(*tracker.next_check() == t0 + 305ms);
  // Nothing changes in between: one observation at the due time announces.
  const auto a = tracker.observe(*tracker.next_check(), leader("a", 1));
  REQUIRE(a.has_value());
  CHECK(a->kind == Kind::has_leader);
  CHECK_FALSE(tracker.next_check().has_value());
}

TEST_CASE("leader state: a leader that is the only voter is announced without the window", "[leader]") {
  LeaderStateTracker tracker(300ms);
  LeaderObservation sole = leader("a", 1);
  sole.sole_voter = true;
  CHECK(run(tracker, t0, 100ms, none(0)).empty());
  CHECK(run(tracker, t0 + 100ms, 1ms, sole) == std::vector<std::string>{"has:a@1"});
  CHECK_FALSE(tracker.next_check().has_value());
  // Losing it is debounced as ever (the flag only ever marks a leader).
  CHECK(run(tracker, t0 + 101ms, 300ms, none(2)).empty());
  CHECK(run(tracker, t0 + 401ms, 1ms, none(2)) == std::vector<std::string>{"none(a)@2"});
}

TEST_CASE("leader state: with no window every change is announced at once", "[leader]") {
  LeaderStateTracker tracker(0ms);
  CHECK(run(tracker, t0, 1ms, leader("a", 1)) == std::vector<std::string>{"has:a@1"});
  CHECK(run(tracker, t0 + 1ms, 1ms, none(2)) == std::vector<std::string>{"none(a)@2"});
  CHECK(run(tracker, t0 + 2ms, 1ms, leader("a", 3)) == std::vector<std::string>{"has:a@3"});
  CHECK(tracker.leader_changes() == 1);  // still the same leader
}
