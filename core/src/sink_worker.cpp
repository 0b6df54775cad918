#include "sink_worker.hpp"

#include "dead_letter.hpp"
#include "event_filter.hpp"
#include "sink_spool.hpp"
#include "zctl/core/detail/event_type_memo.hpp"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <utility>

#include "zctl/core/log.hpp"
#include "zctl/core/sink_host.hpp"

namespace zctl {

std::string sink_config_fingerprint(const SinkConfig& c) {
  std::ostringstream out;
  out << c.name << '\n' << c.plugin << '\n';
  for (const auto& n : c.filter.namespaces) out << "ns:" << n << '\n';
  for (const auto& t : c.filter.types) out << "type:" << t << '\n';
  out << c.queue.max_events << ' ' << static_cast<int>(c.queue.when_full) << ' ' << c.queue.block_timeout.count()
      << ' ' << c.queue.batch_max << '\n'
      << c.retry.initial.count() << ' ' << c.retry.max.count() << ' ' << c.retry.max_attempts << '\n'
      << c.spool.dir << ' ' << c.spool.max_bytes << ' ' << c.call_timeout.count() << '\n'
      << c.dead_letter.path << ' ' << c.dead_letter.max_bytes << '\n'
      << c.config_json;
  return out.str();
}

namespace {

constexpr uint32_t kReasonCap = 512;
constexpr uint32_t kUnhealthyAfterFailures = 3;
constexpr auto kHealthCheckInterval = std::chrono::seconds(10);
// An unhealthy sink is announced recovered only after staying healthy this
// long, so a sink that flaps gives one unhealthy/recovered pair, not one
// per flap.
constexpr auto kRecoveryStability = std::chrono::seconds(1);
constexpr auto kBatchLinger = std::chrono::microseconds(500);
// How often, at the latest, a worker waiting to retry moves newly queued
// events to its spool; offers wake it sooner, unless its last write failed
// or left events queued.
constexpr auto kSpoolAbsorbInterval = std::chrono::milliseconds(100);

const char* result_name(int32_t code) {
  switch (code) {
    case ZCTL_SINK_OK: return "ok";
    case ZCTL_SINK_RETRY: return "retry";
    case ZCTL_SINK_REJECT: return "reject";
    case ZCTL_SINK_PENDING: return "pending";
    default: return "invalid";
  }
}

}  // namespace

// What a plugin reported through host->complete.
struct Completion {
  int32_t result = ZCTL_SINK_RETRY;
  uint32_t retry_after_ms = 0;
  std::string reason;
};

// A delivery attempt that failed before deliver() took the batch over.
struct FailedAttempt {
  uint32_t attempt = 0;  // 0: none yet
  uint32_t retry_after_ms = 0;
  std::string reason;
  std::chrono::steady_clock::time_point first_attempt{};
};

struct SinkWorker::State {
  // --- fixed at construction ---
  std::string name;
  Counter* delivered_counter;
  Counter* retried_counter;
  Counter* dropped_counter;
  Counter* failed_counter;
  Gauge* queue_gauge;
  Gauge* up_gauge;
  Gauge* spool_events_gauge;
  Gauge* spool_bytes_gauge;
  Histogram* delivery_seconds;
  zctl_sink_host host_api{};

  // --- guarded by mutex ---
  mutable std::mutex mutex;
  std::condition_variable work_ready;   // worker waits: events, stop, reopen, replacement
  std::condition_variable space_ready;  // blocked producers wait
  std::condition_variable completion_ready;
  SinkConfig config;
  std::shared_ptr<LoadedPlugin> plugin;
  std::deque<EventPtr> queue;
  size_t blocked_producers = 0;
  bool stalled = false;  // `block` timed out: shed until the queue drains below half
  bool stopping = false;
  Clock::time_point deadline = Clock::time_point::max();
  bool reopen_requested = false;
  bool idle = false;  // the worker sleeps until notified; producers must wake it
  // The worker waits to retry with a spool that takes events: producers
  // wake it so each event reaches the disk at once, not one absorb interval
  // later (a kill -9 meanwhile would lose it).
  bool absorbing = false;
  std::optional<std::pair<SinkConfig, std::shared_ptr<LoadedPlugin>>> replacement;
  // asynchronous completions of the batches in flight, by batch id; a
  // completion for an id not here (late, repeated, unknown) is ignored
  std::map<uint64_t, std::optional<Completion>> awaited;
  // health and drop bookkeeping for the supervisor
  bool healthy = true;
  Clock::time_point healthy_since{};
  std::string unhealthy_reason;
  bool announced_unhealthy = false;
  std::vector<std::pair<std::string, uint64_t>> pending_drops;
  Clock::time_point last_drop_report{};
  // filter decisions per (namespace, type); cleared when reload swaps the filter
  detail::EventTypeMemo<bool> filter_cache;

  // --- set by start(), then used by the worker thread only; the spool's
  // counters are read by any thread ---
  std::unique_ptr<SinkSpool> spool;
  std::unique_ptr<DeadLetterFile> dead_letter;

  // --- worker thread only ---
  void* instance = nullptr;
  uint64_t next_batch_id = 1;
  uint32_t consecutive_failures = 0;
  Clock::time_point last_health_check = Clock::now();
  Clock::time_point next_create_attempt{};
  uint32_t create_failures = 0;
  uint32_t spool_failures = 0;  // consecutive failed writes to the spool
  std::mt19937_64 rng{std::random_device{}()};

  // --- atomics read by the supervisor ---
  std::atomic<int64_t> call_started_ns{0};  // 0 = not inside a plugin call
  std::atomic<const char*> call_name{""};
  std::atomic<bool> finished{false};

  // ---------------------------------------------------------------------

  // Every loss is announced (sink/dropped); the metric splits them: events
  // never attempted are "dropped", attempted and given up on are "failed".
  void count_drop(const std::string& reason, uint64_t n) {  // mutex held
    if (reason == "queue_full" || reason == "spool_full" || reason == "shutdown") dropped_counter->inc(n);
    for (auto& [r, count] : pending_drops) {
      if (r == reason) {
        count += n;
        return;
      }
    }
    pending_drops.emplace_back(reason, n);
  }

  void set_health(bool ok, std::string reason) {  // mutex held
    if (ok && !healthy) healthy_since = Clock::now();
    healthy = ok;
    unhealthy_reason = ok ? std::string() : std::move(reason);
    up_gauge->set(ok ? 1 : 0);
  }

  bool matches(const Event& event) {  // mutex held
    if (const bool* known = filter_cache.find(event.event_namespace, event.event_type)) return *known;
    return filter_cache.insert(event.event_namespace, event.event_type,
                               filter_matches(config.filter.namespaces, config.filter.types, event));
  }

  // Runs a plugin call with hang detection for the supervisor.
  template <typename Fn>
  int32_t plugin_call(const char* what, Fn&& fn) {
    call_name.store(what);
    call_started_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
    int32_t result;
    try {
      result = fn();
    } catch (...) {
      // Only a plugin that bypasses the SDK helper can let this happen.
      result = -1;
    }
    call_started_ns.store(0);
    return result;
  }

  static void host_log(void* ctx, int32_t level, const char* msg) {
    auto* self = static_cast<State*>(ctx);
    const LogLevel lvl = level <= ZCTL_SINK_LOG_DEBUG ? LogLevel::debug
                         : level == ZCTL_SINK_LOG_INFO ? LogLevel::info
                         : level == ZCTL_SINK_LOG_WARN ? LogLevel::warn
                                                       : LogLevel::error;
    log_message(lvl, "sink " + self->name + ": " + (msg ? msg : ""));
  }

  static void host_complete(void* ctx, uint64_t batch_id, int32_t result, uint32_t retry_after_ms,
                            const char* reason) {
    auto* self = static_cast<State*>(ctx);
    std::lock_guard lock(self->mutex);
    const auto it = self->awaited.find(batch_id);
    if (it == self->awaited.end() || it->second.has_value()) {
      log_warn("sink " + self->name + ": ignoring completion for batch " + std::to_string(batch_id) +
               " (not awaited, late or repeated)");
      return;
    }
    it->second = Completion{result, retry_after_ms, reason ? reason : ""};
    self->completion_ready.notify_all();
    self->work_ready.notify_one();  // a pipelining worker waits there
  }

  // Creates an instance with the current config. Returns the plugin's code.
  int32_t create_instance(std::string& error) {
    std::shared_ptr<LoadedPlugin> p;
    std::string json;
    {
      std::lock_guard lock(mutex);
      p = plugin;
      json = config.config_json;
    }
    char err[kReasonCap] = {};
    void* created = nullptr;
    const int32_t rc = plugin_call("create", [&] { return p->descriptor().create(json.c_str(), &host_api, &created, err, sizeof err); });
    if (rc == ZCTL_SINK_OK && created) {
      instance = created;
      return rc;
    }
    error = err[0] ? err : (rc == ZCTL_SINK_OK ? "create returned no instance" : std::string("create failed (") + result_name(rc) + ")");
    return rc == ZCTL_SINK_OK ? ZCTL_SINK_RETRY : rc;
  }

  void destroy_instance() {
    if (!instance) return;
    auto p = plugin;
    void* victim = instance;
    instance = nullptr;
    plugin_call("destroy", [&] {
      p->descriptor().destroy(victim);
      return ZCTL_SINK_OK;
    });
  }

  void flush_instance() {
    const auto& d = plugin->descriptor();
    if (!instance || !d.flush) return;
    char reason[kReasonCap] = {};
    zctl_sink_status status{sizeof(zctl_sink_status), 0, reason, sizeof reason, 0};
    const int32_t rc = plugin_call("flush", [&] { return d.flush(instance, 5000, &status); });
    if (rc != ZCTL_SINK_OK) log_warn("sink " + name + ": flush failed: " + (reason[0] ? reason : result_name(rc)));
  }

  Duration backoff(uint32_t attempt, uint32_t retry_after_ms) {
    const RetryConfig retry = config.retry;
    const auto initial = std::max<int64_t>(retry.initial.count(), 1);
    const auto cap = std::max<int64_t>(retry.max.count(), initial);
    const int shift = static_cast<int>(std::min<uint32_t>(attempt > 0 ? attempt - 1 : 0, 30));
    const int64_t base = std::min<int64_t>(cap, initial << shift);
    // "Equal jitter": half fixed, half random, so retries of many nodes spread
    // out but never collapse to zero.
    std::uniform_int_distribution<int64_t> jitter(0, base / 2);
    const int64_t wait = base - base / 2 + jitter(rng);
    return Duration(std::max<int64_t>(wait, retry_after_ms));
  }

  // Sleeps until `until` unless stopping with a deadline that comes first.
  // Returns false when the deadline passed (give up).
  // Wakes early for a reconfiguration (SIGHUP), so a sink stuck retrying
  // can be fixed; the limit is re-read on every wake because stop() may set
  // the deadline while we sleep. With `wake_on_offer`, and nothing queued
  // yet, also wakes for the next event offered (see `absorbing`).
  bool sleep_until(Clock::time_point until, bool wake_on_offer = false) {
    std::unique_lock lock(mutex);
    absorbing = wake_on_offer && queue.empty();
    for (;;) {
      const auto limit = std::min(until, deadline);
      if (Clock::now() >= limit || replacement.has_value() || reopen_requested || (absorbing && !queue.empty())) break;
      work_ready.wait_until(lock, limit);
    }
    absorbing = false;
    return Clock::now() < deadline;
  }

  // Applies a pending SIGHUP reconfiguration between delivery attempts.
  void apply_pending_control() {
    std::optional<std::pair<SinkConfig, std::shared_ptr<LoadedPlugin>>> swap;
    bool reopen;
    {
      std::lock_guard lock(mutex);
      swap.swap(replacement);
      reopen = std::exchange(reopen_requested, false);
    }
    if (swap) apply_replacement(std::move(swap->first), std::move(swap->second));
    if (reopen) reopen_instance();
  }

  // Delivers one batch with retries. Returns true when the batch is done
  // with (delivered, rejected, out of attempts), false when the stop
  // deadline passed first: a spooled batch then stays in the spool.
  // `failed` carries the attempt that already failed before this call (a
  // batch leaving the async pipeline): it counts towards max_attempts.
  bool deliver(std::deque<EventPtr>& batch, FailedAttempt failed = {}) {
    const std::vector<zctl_sink_event> views = views_of(batch);
    const auto first_attempt = failed.attempt > 0 ? failed.first_attempt : Clock::now();
    const uint64_t n = batch.size();
    uint32_t attempt = failed.attempt;
    std::string reason = std::move(failed.reason);
    uint32_t retry_after_ms = failed.retry_after_ms;
    for (;;) {
      if (attempt > 0) {  // the last attempt failed (RETRY): give up, or wait and try again
        const uint32_t max_attempts = config.retry.max_attempts;
        if (max_attempts != 0 && attempt >= max_attempts) {
          failed_counter->inc(n);
          log_error("sink " + name + ": giving up on " + std::to_string(n) + " event(s) after " +
                    std::to_string(attempt) + " attempts: " + reason);
          write_dead_letters(batch, "retries_exhausted", reason, attempt);
          std::lock_guard lock(mutex);
          count_drop("retries_exhausted", n);
          return true;
        }
        if (!wait_to_retry(Clock::now() + backoff(attempt, retry_after_ms))) {
          if (spool) {
            log_warn("sink " + name + ": shutting down with " + std::to_string(n) +
                     " undelivered event(s) in flight; they stay in the spool");
            return false;
          }
          std::lock_guard lock(mutex);
          count_drop("shutdown", n);
          log_error("sink " + name + ": shutting down with " + std::to_string(n) + " undelivered event(s) in flight");
          return false;
        }
        apply_pending_control();  // the batch is retried with the new config
      }
      ++attempt;
      reason.clear();
      retry_after_ms = 0;
      const int32_t rc = attempt_once(views, attempt, reason, retry_after_ms);
      if (rc == ZCTL_SINK_OK) {
        record_delivered(n, first_attempt);
        return true;
      }
      if (rc == ZCTL_SINK_REJECT) {
        record_rejected(batch, reason, attempt);
        return true;
      }
      // RETRY (attempt_once maps invalid codes and escaped exceptions to it):
      // transient until attempts run out.
      record_failed_attempt(n, attempt, reason);
    }
  }

  static std::vector<zctl_sink_event> views_of(const std::deque<EventPtr>& batch) {
    std::vector<zctl_sink_event> views;
    views.reserve(batch.size());
    for (const auto& e : batch) {
      views.push_back(zctl_sink_event{e->json.data(), static_cast<uint32_t>(e->json.size()), 0, e->seq,
                                      e->event_namespace.c_str(), e->event_type.c_str()});
    }
    return views;
  }

  void record_delivered(uint64_t n, Clock::time_point first_attempt) {
    delivery_seconds->observe(std::chrono::duration<double>(Clock::now() - first_attempt).count());
    delivered_counter->inc(n);
    consecutive_failures = 0;
    std::lock_guard lock(mutex);
    if (!healthy) set_health(true, {});
  }

  void record_rejected(const std::deque<EventPtr>& batch, const std::string& reason, uint32_t attempt) {
    const uint64_t n = batch.size();
    failed_counter->inc(n);
    log_error("sink " + name + ": plugin rejected " + std::to_string(n) + " event(s) permanently (seq " +
              std::to_string(batch.front()->seq) + ".." + std::to_string(batch.back()->seq) + "): " + reason);
    write_dead_letters(batch, "rejected", reason, attempt);
    std::lock_guard lock(mutex);
    count_drop("rejected", n);
  }

  void record_failed_attempt(uint64_t n, uint32_t attempt, const std::string& reason) {
    retried_counter->inc(n);
    ++consecutive_failures;
    log_warn("sink " + name + ": delivery attempt " + std::to_string(attempt) + " failed: " + reason);
    std::lock_guard lock(mutex);
    if (consecutive_failures >= kUnhealthyAfterFailures && healthy) set_health(false, reason);
  }

  void write_dead_letters(const std::deque<EventPtr>& batch, std::string_view result, const std::string& reason,
                          uint32_t attempts) {
    if (!dead_letter) return;
    std::string error;
    if (!dead_letter->write(batch, result, reason, attempts, error)) log_error("sink " + name + ": " + error);
  }

  // Sleeps until `until` like sleep_until(), but with a spool moves newly
  // queued events to disk meanwhile, as they come, so an outage fills the
  // spool and not the (smaller, volatile) queue.
  bool wait_to_retry(Clock::time_point until) {
    if (!spool) return sleep_until(until);
    bool wrote = spool_queued();
    for (;;) {
      // Woken by each offer, unless the last write failed or left events
      // queued (the spool full under `block`): waking per event would then
      // spin, and kSpoolAbsorbInterval is all that is left.
      const bool before_deadline = sleep_until(std::min(until, Clock::now() + kSpoolAbsorbInterval), wrote);
      wrote = spool_queued();
      if (!before_deadline) return false;
      if (Clock::now() >= until) return true;
      std::lock_guard lock(mutex);
      if (replacement.has_value() || reopen_requested) return true;
    }
  }

  // Moves every queued event to the spool under the spool's when_full
  // policy. Returns false when the spool cannot be written (the events
  // stay queued, and the sink is unhealthy until a write succeeds).
  bool spool_queued() {
    std::deque<EventPtr> incoming;
    {
      std::lock_guard lock(mutex);
      incoming.swap(queue);
      queue_gauge->set(0);
      if (blocked_producers > 0) space_ready.notify_all();
    }
    if (incoming.empty()) return true;
    std::vector<EventPtr> events(std::make_move_iterator(incoming.begin()), std::make_move_iterator(incoming.end()));
    size_t next = 0;
    std::string failure;
    uint64_t spool_full = 0;
    while (next < events.size()) {
      uint64_t bytes = 0;
      size_t end = next;
      while (end < events.size() && spool->fits(bytes + SinkSpool::record_size(*events[end]))) {
        bytes += SinkSpool::record_size(*events[end++]);
      }
      if (end > next) {
        try {
          spool->append(events.data() + next, end - next);
        } catch (const SpoolError& e) {
          failure = e.what();
          break;
        }
        next = end;
        continue;
      }
      const uint64_t size = SinkSpool::record_size(*events[next]);
      if (config.queue.when_full == WhenFull::block) break;  // back to the queue: its policy applies
      if (config.queue.when_full == WhenFull::drop_newest) {
        spool_full += events.size() - next;
        next = events.size();
        break;
      }
      spool_full += spool->drop_oldest(size);
      if (!spool->fits(size)) {  // larger than what can be freed
        ++spool_full;
        ++next;
      }
    }
    spool_events_gauge->set(static_cast<double>(spool->events()));
    spool_bytes_gauge->set(static_cast<double>(spool->bytes()));
    std::lock_guard lock(mutex);
    if (spool_full > 0) count_drop("spool_full", spool_full);
    if (next < events.size()) {
      queue.insert(queue.begin(), std::make_move_iterator(events.begin() + static_cast<std::ptrdiff_t>(next)),
                   std::make_move_iterator(events.end()));
      queue_gauge->set(static_cast<double>(queue.size()));
    }
    if (!failure.empty()) {
      if (healthy || unhealthy_reason != failure) log_error("sink " + name + ": " + failure);
      set_health(false, failure);
      return false;
    }
    if (std::exchange(spool_failures, 0) > 0) {
      log_info("sink " + name + ": writing to the spool again");
      if (consecutive_failures == 0) set_health(true, {});
    }
    return true;
  }

  int32_t attempt_once(const std::vector<zctl_sink_event>& views, uint32_t attempt, std::string& reason,
                       uint32_t& retry_after_ms) {
    uint64_t batch_id = 0;
    const int32_t rc = send_batch(views, attempt, batch_id, reason, retry_after_ms);
    if (rc != ZCTL_SINK_PENDING) return rc;
    std::unique_lock lock(mutex);
    const auto timeout = Clock::now() + config.call_timeout;
    for (;;) {  // re-reads the stop deadline on every wake
      const auto limit = std::min(timeout, deadline);
      if (awaited.at(batch_id).has_value() || Clock::now() >= limit) break;
      completion_ready.wait_until(lock, limit);
    }
    return take_completion(batch_id, reason, retry_after_ms);  // mutex held
  }

  // Hands a batch to the plugin. Returns OK, RETRY or REJECT as the plugin
  // answered (invalid codes and escaped exceptions mapped to RETRY), or
  // PENDING with `batch_id` awaiting its completion (see take_completion).
  int32_t send_batch(const std::vector<zctl_sink_event>& views, uint32_t attempt, uint64_t& batch_id,
                     std::string& reason, uint32_t& retry_after_ms) {
    if (!instance) {
      // A create that failed transiently is retried as part of delivery.
      std::string error;
      if (create_instance(error) != ZCTL_SINK_OK) {
        reason = "no instance: " + error;
        return ZCTL_SINK_RETRY;
      }
    }
    const auto& d = plugin->descriptor();
    batch_id = next_batch_id++;
    zctl_sink_batch batch{sizeof(zctl_sink_batch), static_cast<uint32_t>(views.size()), views.data(), batch_id, attempt, 0};
    char reason_buf[kReasonCap] = {};
    zctl_sink_status status{sizeof(zctl_sink_status), 0, reason_buf, sizeof reason_buf, 0};
    {
      std::lock_guard lock(mutex);
      awaited[batch_id];  // before emit: the plugin may complete from another thread at once
    }
    int32_t rc = plugin_call("emit", [&] { return d.emit(instance, &batch, &status); });
    if (rc == ZCTL_SINK_PENDING && (d.capabilities & ZCTL_SINK_CAP_ASYNC_COMPLETION)) return rc;
    {
      std::lock_guard lock(mutex);
      awaited.erase(batch_id);
    }
    reason_buf[kReasonCap - 1] = '\0';
    reason = reason_buf;
    retry_after_ms = status.retry_after_ms;
    if (rc == -1) {
      reason = "plugin let an exception escape from emit";
    } else if (rc == ZCTL_SINK_PENDING) {
      reason = "plugin returned PENDING without declaring ZCTL_SINK_CAP_ASYNC_COMPLETION";
      rc = ZCTL_SINK_RETRY;
    } else if (rc != ZCTL_SINK_OK && rc != ZCTL_SINK_RETRY && rc != ZCTL_SINK_REJECT) {
      reason = "plugin returned invalid result code " + std::to_string(rc) + (reason.empty() ? "" : ": " + reason);
      rc = ZCTL_SINK_RETRY;
    }
    return rc;
  }

  // The outcome of a PENDING batch, which stops being awaited: a late
  // completion is ignored and the batch counts as failed (RETRY). Mutex held.
  int32_t take_completion(uint64_t batch_id, std::string& reason, uint32_t& retry_after_ms) {
    const auto it = awaited.find(batch_id);
    if (it == awaited.end() || !it->second) {
      if (it != awaited.end()) awaited.erase(it);
      reason = Clock::now() >= deadline ? std::string("stopping before the plugin completed the batch")
                                        : "no completion within " + format_duration(config.call_timeout);
      return ZCTL_SINK_RETRY;
    }
    const Completion done = std::move(*it->second);
    awaited.erase(it);
    retry_after_ms = done.retry_after_ms;
    reason = done.reason;
    if (done.result != ZCTL_SINK_OK && done.result != ZCTL_SINK_RETRY && done.result != ZCTL_SINK_REJECT) {
      reason = "plugin completed a batch with invalid result code " + std::to_string(done.result);
      return ZCTL_SINK_RETRY;
    }
    return done.result;
  }

  // While idle: keep trying a create that failed transiently (with backoff),
  // and ask a live instance for its health now and then.
  void tend_when_idle() {
    if (!instance) {
      if (Clock::now() < next_create_attempt) return;
      std::string error;
      const bool created = create_instance(error) == ZCTL_SINK_OK;
      next_create_attempt = Clock::now() + backoff(created ? 1 : ++create_failures, 0);
      std::lock_guard lock(mutex);
      if (created) {
        create_failures = 0;
        log_info("sink " + name + ": plugin instance created");
        set_health(true, {});
      } else if (healthy) {
        set_health(false, error);
      }
      return;
    }
    const auto& d = plugin->descriptor();
    if (!d.health || Clock::now() - last_health_check < kHealthCheckInterval) return;
    last_health_check = Clock::now();
    char reason[kReasonCap] = {};
    zctl_sink_status status{sizeof(zctl_sink_status), 0, reason, sizeof reason, 0};
    const int32_t rc = plugin_call("health", [&] { return d.health(instance, &status); });
    std::lock_guard lock(mutex);
    if (rc == ZCTL_SINK_OK) {
      if (!healthy && consecutive_failures == 0) set_health(true, {});
    } else if (healthy) {
      set_health(false, reason[0] ? reason : std::string("health check: ") + result_name(rc));
    }
  }

  void reopen_instance() {
    if (dead_letter) dead_letter->reopen();
    const auto& d = plugin->descriptor();
    if (!instance || !d.reopen) return;
    char reason[kReasonCap] = {};
    zctl_sink_status status{sizeof(zctl_sink_status), 0, reason, sizeof reason, 0};
    const int32_t rc = plugin_call("reopen", [&] { return d.reopen(instance, &status); });
    if (rc == ZCTL_SINK_OK) {
      log_info("sink " + name + ": reopened");
    } else {
      log_warn("sink " + name + ": reopen failed: " + (reason[0] ? reason : result_name(rc)));
    }
  }

  void apply_replacement(SinkConfig new_config, std::shared_ptr<LoadedPlugin> new_plugin) {
    flush_instance();
    destroy_instance();
    if (new_config.dead_letter.path != config.dead_letter.path ||
        new_config.dead_letter.max_bytes != config.dead_letter.max_bytes) {
      try {
        dead_letter = new_config.dead_letter.path.empty()
                          ? nullptr
                          : std::make_unique<DeadLetterFile>(name, new_config.dead_letter.path,
                                                             new_config.dead_letter.max_bytes);
      } catch (const std::exception& e) {
        log_error("sink " + name + ": " + e.what() + "; keeping the previous dead-letter file");
      }
    }
    {
      std::lock_guard lock(mutex);
      config = std::move(new_config);
      plugin = std::move(new_plugin);
      filter_cache.clear();
    }
    std::string error;
    if (create_instance(error) != ZCTL_SINK_OK) {
      log_warn("sink " + name + ": create after reload failed (will retry): " + error);
    } else {
      log_info("sink " + name + ": reconfigured");
    }
    std::lock_guard lock(mutex);
    set_health(error.empty(), error);
  }

  // Waits (mutex held through `lock`) until there is something to do.
  // After a batch (`busy`), naps briefly unannounced so a busy producer
  // fills the next batch instead of waking us once per event; only then
  // sleeps in earnest, announced, so a lone event is delivered at once.
  void wait_for_work(std::unique_lock<std::mutex>& lock, bool busy) {
    const auto has_work = [&] {
      return !queue.empty() || stopping || reopen_requested || replacement.has_value() || (spool && spool->events() > 0);
    };
    if (has_work()) return;
    if (busy) work_ready.wait_for(lock, kBatchLinger, has_work);
    if (has_work()) return;
    idle = true;
    work_ready.wait_for(lock, std::chrono::seconds(1), has_work);
    idle = false;
  }

  // With a spool: queued events go to disk first, batches come from the
  // spool, and a batch leaves it only when it is done with.
  void run_spooled() {
    bool busy = false;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wait_for_work(lock, busy);
        if (stopping && ((queue.empty() && spool->events() == 0) || Clock::now() >= deadline)) break;
      }
      if (!spool_queued()) {
        if (!sleep_until(Clock::now() + backoff(++spool_failures, 0))) break;
        continue;
      }
      apply_pending_control();
      auto batch = spool->take_batch(std::max<uint32_t>(config.queue.batch_max, 1));
      busy = !batch.empty();
      if (busy) {
        if (deliver(batch)) spool->finish_batch();
        spool_events_gauge->set(static_cast<double>(spool->events()));
        spool_bytes_gauge->set(static_cast<double>(spool->bytes()));
      } else {
        tend_when_idle();
      }
    }
    spool_queued();  // what is still queued waits on disk for the next start
    drop_queued_at_stop("stopping; the spool had no room for");
    std::lock_guard lock(mutex);
    if (spool->events() > 0) {
      log_info("sink " + name + ": " + std::to_string(spool->events()) + " undelivered event(s) kept in spool " +
               spool->dir() + " for the next start");
    }
  }

  // What is still queued when the worker ends is lost: said and counted.
  void drop_queued_at_stop(const std::string& why) {
    std::lock_guard lock(mutex);
    if (queue.empty()) return;
    log_error("sink " + name + ": " + why + " " + std::to_string(queue.size()) +
              " queued event(s); they are not delivered");
    count_drop("shutdown", queue.size());
    queue.clear();
  }

  // Moves up to batch_max queued events into `batch`. Mutex held.
  void take_from_queue(std::deque<EventPtr>& batch) {
    const size_t take = std::min<size_t>(queue.size(), std::max<uint32_t>(config.queue.batch_max, 1));
    if (take == queue.size()) {
      batch.swap(queue);  // O(1): producers wait on this lock
    } else {
      batch.assign(std::make_move_iterator(queue.begin()),
                   std::make_move_iterator(queue.begin() + static_cast<std::ptrdiff_t>(take)));
      queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(take));
    }
    queue_gauge->set(static_cast<double>(queue.size()));
    if (stalled && queue.size() < config.queue.max_events / 2) {
      stalled = false;
      log_info("sink " + name + ": queue drained, accepting events again");
    }
    if (take > 0 && blocked_producers > 0) space_ready.notify_all();
  }

  // A plugin with ZCTL_SINK_CAP_PIPELINE gets up to kPipelineDepth
  // batches at once, so producing the next batch overlaps waiting for the earlier
  // ones' acknowledgements. A batch that fails leaves the pipeline: the
  // others in flight finish first, then it is retried alone by deliver(),
  // with backoff and max_attempts as ever. Batches are handed over in queue
  // order; only a retry can deliver a batch after a later one.
  void run_pipelined() {
    struct InFlight {
      uint64_t id;
      std::deque<EventPtr> events;
      Clock::time_point sent;
    };
    struct Outcome {
      std::deque<EventPtr> events;
      Clock::time_point sent;
      int32_t result;
      std::string reason;
      uint32_t retry_after_ms;
    };
    std::deque<InFlight> in_flight;
    std::deque<std::pair<std::deque<EventPtr>, FailedAttempt>> to_retry;
    bool busy = false;
    for (;;) {
      std::deque<EventPtr> batch;
      std::vector<Outcome> outcomes;
      bool control = false;
      {
        std::unique_lock lock(mutex);
        const auto settled = [&](const InFlight& f) {
          return awaited.at(f.id).has_value() || Clock::now() >= std::min(f.sent + config.call_timeout, deadline);
        };
        const auto room = [&] {
          return in_flight.size() < kPipelineDepth && to_retry.empty() && !reopen_requested &&
                 !replacement.has_value() && !(stopping && Clock::now() >= deadline);
        };
        const auto ready = [&] {
          return std::any_of(in_flight.begin(), in_flight.end(), settled) || (room() && !queue.empty()) ||
                 (in_flight.empty() && (stopping || reopen_requested || replacement.has_value() || !to_retry.empty()));
        };
        if (in_flight.empty() && to_retry.empty()) {
          wait_for_work(lock, busy);
        } else if (!ready()) {
          auto limit = deadline;
          for (const auto& f : in_flight) limit = std::min(limit, f.sent + config.call_timeout);
          idle = room();  // producers wake us when a batch could go out
          work_ready.wait_until(lock, limit, ready);
          idle = false;
        }
        for (auto it = in_flight.begin(); it != in_flight.end();) {
          if (!settled(*it)) {
            ++it;
            continue;
          }
          Outcome o{std::move(it->events), it->sent, ZCTL_SINK_RETRY, {}, 0};
          o.result = take_completion(it->id, o.reason, o.retry_after_ms);
          outcomes.push_back(std::move(o));
          it = in_flight.erase(it);
        }
        if (stopping && in_flight.empty() && to_retry.empty() && outcomes.empty() &&
            (queue.empty() || Clock::now() >= deadline)) {
          break;
        }
        if (room() && outcomes.empty()) take_from_queue(batch);
        control = in_flight.empty() && (reopen_requested || replacement.has_value());
      }
      for (auto& o : outcomes) {
        if (o.result == ZCTL_SINK_OK) {
          record_delivered(o.events.size(), o.sent);
        } else if (o.result == ZCTL_SINK_REJECT) {
          record_rejected(o.events, o.reason, 1);
        } else {
          record_failed_attempt(o.events.size(), 1, o.reason);
          to_retry.emplace_back(std::move(o.events), FailedAttempt{1, o.retry_after_ms, o.reason, o.sent});
        }
      }
      outcomes.clear();
      if (in_flight.empty() && !to_retry.empty()) {
        std::unique_lock lock(mutex);
        if (stopping && Clock::now() >= deadline) {  // no more attempts
          uint64_t n = 0;
          for (const auto& [events, attempt] : to_retry) n += events.size();
          count_drop("shutdown", n);
          log_error("sink " + name + ": shutting down with " + std::to_string(n) + " undelivered event(s) in flight");
          to_retry.clear();
          continue;
        }
        lock.unlock();
        deliver(to_retry.front().first, std::move(to_retry.front().second));
        to_retry.pop_front();
        continue;
      }
      if (control) apply_pending_control();
      busy = !batch.empty();
      if (!busy) {
        if (in_flight.empty()) tend_when_idle();
        continue;
      }
      uint64_t id = 0;
      std::string reason;
      uint32_t retry_after_ms = 0;
      const auto sent = Clock::now();
      const int32_t rc = send_batch(views_of(batch), 1, id, reason, retry_after_ms);
      if (rc == ZCTL_SINK_PENDING) {
        in_flight.push_back(InFlight{id, std::move(batch), sent});
      } else if (rc == ZCTL_SINK_OK) {
        record_delivered(batch.size(), sent);
      } else if (rc == ZCTL_SINK_REJECT) {
        record_rejected(batch, reason, 1);
      } else {
        record_failed_attempt(batch.size(), 1, reason);
        to_retry.emplace_back(std::move(batch), FailedAttempt{1, retry_after_ms, reason, sent});
      }
    }
    drop_queued_at_stop("stop deadline passed with");
  }

  void run() {
    if (spool) return run_spooled();
    constexpr uint32_t kPipeline = ZCTL_SINK_CAP_ASYNC_COMPLETION | ZCTL_SINK_CAP_PIPELINE;
    if ((plugin->descriptor().capabilities & kPipeline) == kPipeline) return run_pipelined();
    std::deque<EventPtr> batch;
    bool busy = false;  // the last round delivered something
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wait_for_work(lock, busy);
        if (stopping && (queue.empty() || Clock::now() >= deadline)) break;
        take_from_queue(batch);
      }
      apply_pending_control();
      busy = !batch.empty();
      if (busy) {
        deliver(batch);
        batch.clear();  // outside the lock: releasing events is not free
      } else {
        tend_when_idle();
      }
    }
    drop_queued_at_stop("stop deadline passed with");
  }
};

SinkWorker::SinkWorker(SinkConfig config, std::shared_ptr<LoadedPlugin> plugin, MetricsRegistry& metrics)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.name = config.name;
  auto& events = metrics.counter("controller_sink_events_total",
                                 "Events per sink by result: delivered, retried (per attempt), dropped (queue full, "
                                 "rejected, retries exhausted, shutdown), failed (permanently undeliverable).",
                                 {"sink", "result"});
  s.delivered_counter = &events.with({s.name, "delivered"});
  s.retried_counter = &events.with({s.name, "retried"});
  s.dropped_counter = &events.with({s.name, "dropped"});
  s.failed_counter = &events.with({s.name, "failed"});
  s.queue_gauge = &metrics.gauge("controller_sink_queue_events", "Events waiting in the sink's queue.", {"sink"})
                       .with({s.name});
  s.up_gauge = &metrics.gauge("controller_sink_up", "1 when the sink has a working plugin instance and is delivering.",
                              {"sink"})
                    .with({s.name});
  s.spool_events_gauge = &metrics.gauge("controller_sink_spool_events",
                                        "Undelivered events in the sink's spool on disk.", {"sink"})
                              .with({s.name});
  s.spool_bytes_gauge = &metrics.gauge("controller_sink_spool_bytes",
                                       "Bytes of undelivered events in the sink's spool on disk.", {"sink"})
                             .with({s.name});
  s.delivery_seconds = &metrics
                            .histogram("controller_sink_delivery_seconds",
                                       "Time from a batch's first delivery attempt to its successful delivery.",
                                       {"sink"}, MetricsRegistry::latency_buckets())
                            .with({s.name});
  s.config = std::move(config);
  s.plugin = std::move(plugin);
  s.host_api = zctl_sink_host{sizeof(zctl_sink_host), 0, &s, &State::host_log, &State::host_complete};
}

SinkWorker::~SinkWorker() {
  if (thread_.joinable()) stop(Clock::now());
}

void SinkWorker::start() {
  State& s = *state_;
  try {
    if (!s.config.spool.dir.empty()) {
      s.spool = std::make_unique<SinkSpool>(s.config.spool.dir, s.config.spool.max_bytes, s.config.queue.max_events);
      s.spool_events_gauge->set(static_cast<double>(s.spool->events()));
      s.spool_bytes_gauge->set(static_cast<double>(s.spool->bytes()));
      if (s.spool->recovered_events() > 0) {
        log_info("sink " + s.name + ": " + std::to_string(s.spool->recovered_events()) +
                 " undelivered event(s) from an earlier run in spool " + s.spool->dir() + "; delivering them first");
      }
    }
    if (!s.config.dead_letter.path.empty()) {
      s.dead_letter = std::make_unique<DeadLetterFile>(s.name, s.config.dead_letter.path, s.config.dead_letter.max_bytes);
    }
  } catch (const std::exception& e) {
    throw SinkSetupError("sink '" + s.name + "': " + e.what());
  }
  std::string error;
  const int32_t rc = s.create_instance(error);
  if (rc == ZCTL_SINK_REJECT || rc < 0 || rc > ZCTL_SINK_PENDING) {
    throw SinkSetupError("sink '" + s.name + "' (plugin " + s.plugin->name() + "): " + error);
  }
  {
    std::lock_guard lock(s.mutex);
    if (rc != ZCTL_SINK_OK) {
      log_warn("sink " + s.name + ": not ready yet, will retry: " + error);
      s.set_health(false, error);
    } else {
      s.set_health(true, {});
    }
  }
  thread_ = std::thread([state = state_] {
    // "sink:<name>" in top -H and perf; the kernel keeps 15 characters.
    pthread_setname_np(pthread_self(), ("sink:" + state->name).substr(0, 15).c_str());
    state->run();
    state->flush_instance();
    state->destroy_instance();
    state->finished = true;
    std::lock_guard lock(state->mutex);
    state->up_gauge->set(0);
  });
}

bool SinkWorker::offer(const EventPtr& event) {
  State& s = *state_;
  std::unique_lock lock(s.mutex);
  if (s.stopping || !s.matches(*event)) return true;
  const uint64_t max = std::max<uint64_t>(s.config.queue.max_events, 1);
  if (s.queue.size() >= max) {
    switch (s.config.queue.when_full) {
      case WhenFull::drop_newest:
        s.count_drop("queue_full", 1);
        return false;
      case WhenFull::drop_oldest:
        s.queue.pop_front();
        s.count_drop("queue_full", 1);
        break;
      case WhenFull::block: {
        if (s.stalled) {
          s.count_drop("queue_full", 1);
          return false;
        }
        ++s.blocked_producers;
        const bool space = s.space_ready.wait_for(lock, s.config.queue.block_timeout,
                                                  [&] { return s.queue.size() < max || s.stopping; });
        --s.blocked_producers;
        if (!space || s.stopping) {
          s.stalled = true;
          log_error("sink " + s.name + ": queue full for " + format_duration(s.config.queue.block_timeout) +
                    "; shedding new events until it drains below half");
          s.count_drop("queue_full", 1);
          return false;
        }
        break;
      }
    }
  }
  s.queue.push_back(event);
  s.queue_gauge->set(static_cast<double>(s.queue.size()));
  if (s.idle || s.absorbing) s.work_ready.notify_one();
  return true;
}

void SinkWorker::request_reopen() {
  std::lock_guard lock(state_->mutex);
  state_->reopen_requested = true;
  state_->work_ready.notify_one();
}

void SinkWorker::replace(SinkConfig config, std::shared_ptr<LoadedPlugin> plugin) {
  std::lock_guard lock(state_->mutex);
  state_->replacement.emplace(std::move(config), std::move(plugin));
  state_->work_ready.notify_one();
}

void SinkWorker::request_stop(Clock::time_point deadline) {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  s.stopping = true;
  s.deadline = deadline;
  s.work_ready.notify_all();
  s.space_ready.notify_all();
  s.completion_ready.notify_all();
}

bool SinkWorker::wait_stopped(Clock::time_point give_up) {
  State& s = *state_;
  if (!thread_.joinable()) return true;
  while (!s.finished && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!s.finished) {
    log_error("sink " + s.name + ": plugin call '" + std::string(s.call_name.load()) +
              "' did not return; abandoning the sink's worker");
    thread_.detach();  // it owns a reference to the state and the library
    return false;
  }
  thread_.join();
  return true;
}

bool SinkWorker::stop(Clock::time_point deadline) {
  request_stop(deadline);
  return wait_stopped(deadline + kStopGrace);
}

SinkReport SinkWorker::take_report(Clock::time_point now) {
  State& s = *state_;
  SinkReport report;
  const int64_t started = s.call_started_ns.load();
  std::lock_guard lock(s.mutex);
  if (started != 0) {
    const auto in_call = now.time_since_epoch() - std::chrono::nanoseconds(started);
    if (in_call > s.config.call_timeout && s.healthy) {
      s.set_health(false, std::string("plugin call '") + s.call_name.load() + "' has not returned for " +
                              format_duration(std::chrono::duration_cast<Duration>(in_call)));
    }
  }
  if (!s.healthy && !s.announced_unhealthy) {
    s.announced_unhealthy = true;
    report.became_unhealthy = s.unhealthy_reason;
  } else if (s.healthy && s.announced_unhealthy && now - s.healthy_since >= kRecoveryStability) {
    s.announced_unhealthy = false;
    report.recovered = true;
  }
  // At most one sink/dropped per reason and second: the announcement itself
  // reaches this sink's (full) queue, and must not feed a loop of events.
  if (!s.pending_drops.empty() && now - s.last_drop_report >= std::chrono::seconds(1)) {
    report.dropped.swap(s.pending_drops);
    s.last_drop_report = now;
  }
  return report;
}

const std::string& SinkWorker::name() const { return state_->name; }
std::string SinkWorker::plugin_name() const {
  std::lock_guard lock(state_->mutex);
  return state_->config.plugin;
}
std::string SinkWorker::config_fingerprint() const {
  std::lock_guard lock(state_->mutex);
  return sink_config_fingerprint(state_->replacement ? state_->replacement->first : state_->config);
}
bool SinkWorker::up() const {
  std::lock_guard lock(state_->mutex);
  return state_->healthy && state_->up_gauge->value() > 0;
}
std::string SinkWorker::down_reason() const {
  std::lock_guard lock(state_->mutex);
  return state_->unhealthy_reason;
}
uint64_t SinkWorker::queued() const {
  std::lock_guard lock(state_->mutex);
  return state_->queue.size() + (state_->spool ? state_->spool->events() : 0);
}
SpoolConfig SinkWorker::spool_config() const {
  std::lock_guard lock(state_->mutex);
  return state_->config.spool;
}
uint64_t SinkWorker::delivered() const { return state_->delivered_counter->value(); }
uint64_t SinkWorker::failed() const { return state_->failed_counter->value(); }
uint64_t SinkWorker::dropped() const { return state_->dropped_counter->value(); }

}  // namespace zctl
