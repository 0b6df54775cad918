// A deadline queue for many connections that share one timeout.
//
// When every entry gets the same timeout, deadlines are ordered like the
// insertions, so an intrusive FIFO list is already sorted: insert, remove and
// "touch" (move to the back with a fresh deadline) are O(1), the owner needs
// one timer for the whole queue (armed at front()'s deadline), and an entry
// costs two pointers and a time point inside the object it tracks. The mesh
// server keeps one queue per phase: pending joins (the stray grace period),
// joined sessions (the idle timeout) and lingering closes.
//
// Pure: no clock, no timer; the caller passes `now`. Not thread-safe: one
// owner thread. An entry is in at most one queue at a time and must be
// removed before it is destroyed.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

namespace zctl {

class DeadlineQueue;

// Embed one in each tracked object.
struct DeadlineHook {
  std::chrono::steady_clock::time_point deadline{};
  DeadlineHook* prev = nullptr;
  DeadlineHook* next = nullptr;
  DeadlineQueue* queue = nullptr;  // the queue it is linked into, or nullptr
  bool linked() const { return queue != nullptr; }
};

class DeadlineQueue {
 public:
  using Clock = std::chrono::steady_clock;

  explicit DeadlineQueue(Clock::duration timeout) : timeout_(timeout) {}
  DeadlineQueue(const DeadlineQueue&) = delete;
  DeadlineQueue& operator=(const DeadlineQueue&) = delete;

  Clock::duration timeout() const { return timeout_; }

  // Appends with deadline start + timeout, or the back's deadline if that is
  // later: a start older than the back's must not break the order, and is
  // then never early, only up to the difference late. (The mesh server's
  // starts rise with the order of accept; the queue does not rely on it.)
  // Returns true when the hook became the front, i.e. the owner's timer
  // must be (re)armed.
  bool push(DeadlineHook& hook, Clock::time_point start) {
    unlink_if_linked(hook);
    hook.deadline = start + timeout_;
    if (tail_ != nullptr && tail_->deadline > hook.deadline) hook.deadline = tail_->deadline;
    hook.queue = this;
    hook.prev = tail_;
    hook.next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = &hook;
    } else {
      head_ = &hook;
    }
    tail_ = &hook;
    ++size_;
    return head_ == &hook;
  }

  // Moves the hook to the back with a fresh deadline (activity seen).
  void touch(DeadlineHook& hook, Clock::time_point now) { push(hook, now); }

  // Unlinks the hook if it is in this queue; a no-op otherwise.
  void remove(DeadlineHook& hook) {
    if (hook.queue == this) unlink(hook);
  }

  // Unlinks and returns the front hook when its deadline is at or before
  // `now`; nullptr when none has expired. Callers loop until nullptr.
  DeadlineHook* pop_expired(Clock::time_point now) {
    if (head_ == nullptr || head_->deadline > now) return nullptr;
    DeadlineHook* hook = head_;
    unlink(*hook);
    return hook;
  }

  std::optional<Clock::time_point> next_deadline() const {
    if (head_ == nullptr) return std::nullopt;
    return head_->deadline;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  static void unlink_if_linked(DeadlineHook& hook) {
    if (hook.queue != nullptr) {
      hook.queue->unlink(hook);  // hooks move between queues: pending -> joined -> closing
    }
  }

  void unlink(DeadlineHook& hook) {
    if (hook.prev != nullptr) {
      hook.prev->next = hook.next;
    } else {
      head_ = hook.next;
    }
    if (hook.next != nullptr) {
      hook.next->prev = hook.prev;
    } else {
      tail_ = hook.prev;
    }
    hook.prev = hook.next = nullptr;
    hook.queue = nullptr;
    --size_;
  }

  Clock::duration timeout_;
  DeadlineHook* head_ = nullptr;
  DeadlineHook* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace zctl
