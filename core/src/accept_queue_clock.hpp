// When each accepted connection's TCP handshake had completed, at the
// latest, worked out from looks at the listen socket's accept queue.
//
// The kernel queues a connection when its handshake completes, and accept()
// takes them from the front in that order. A look that finds Q connections
// queued at time T, after A accepts in all, says that connections A to
// A+Q-1 (counting accepts from 0) were established by T. The first look
// that saw a connection thus bounds its handshake from above, so a clock
// started there never starts early; the look before, which did not see it
// yet, bounds it from below, so the clock starts late by at most the time
// between two looks. A connection that arrived after the last look gets its
// accept time.
//
// Why not the kernel's own age of the handshake (TCP_INFO's
// tcpi_last_ack_recv): it counts in jiffies, and on a VM whose time-keeping
// vCPU is descheduled jiffies stop and then jump, so an age read right
// after a handshake can claim tens of milliseconds that never passed. A
// clock started from it closed connections before their grace period.
//
// Pure: no clock, no socket; the caller passes the times. Not thread-safe:
// the accepting thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

namespace zctl {

class AcceptQueueClock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // `queued` connections were waiting to be accepted; `at` was read after
  // the count.
  void looked(uint64_t queued, TimePoint at) {
    const uint64_t seen_through = accepted_ + queued;
    if (!looks_.empty() && seen_through < looks_.back().seen_through) {
      // The queue holds fewer than an earlier look promised, so it lost
      // connections this side never accepted: the count no longer says
      // which connection is which. Forget the looks; later connections
      // only start later.
      looks_.clear();
    }
    if (queued == 0 || (!looks_.empty() && seen_through == looks_.back().seen_through)) return;
    looks_.push_back({seen_through, at});
  }

  // The next connection in queue order was accepted at `now`: the time its
  // handshake had completed by.
  TimePoint accepted(TimePoint now) {
    const uint64_t index = accepted_++;
    while (!looks_.empty() && looks_.front().seen_through <= index) looks_.pop_front();
    if (looks_.empty()) return now;
    return looks_.front().at < now ? looks_.front().at : now;
  }

  // accept() found the queue empty: every look has been used up. Dropping
  // them also bounds what a miscount could do to later connections.
  void drained() { looks_.clear(); }

  // Looks still waiting for their connections to be accepted.
  size_t looks() const { return looks_.size(); }

 private:
  struct Look {
    uint64_t seen_through;  // connections with a lower index were queued...
    TimePoint at;           // ...by then
  };
  std::deque<Look> looks_;
  uint64_t accepted_ = 0;
};

}  // namespace zctl
