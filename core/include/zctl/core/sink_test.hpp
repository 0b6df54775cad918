// `zctl sink test`: sends synthetic events through one configured sink and
// reports what became of them.
//
// The sink runs in a SinkHost of its own, so its events take the node's real
// path: the sink's queue, batching, retries with backoff, async completion,
// call_timeout and health checks, with the plugin loaded from the plugin
// search path exactly as `zctl serve` loads it. Nothing else of a node runs:
// no data dir, no sequence store, no admin API; the synthetic events number
// their own seq from 1 and never consume the node's.
//
// The synthetic events are `node/sink_test` (man/zctl-events.7): the usual
// envelope, then `"test":true`, the sink's name, a random run id and the
// number of events in the run, so a receiver can tell them from real ones.
//
// Delivery latency is observed from outside the worker, through the sink's
// counters: events finish in the order they were queued (the queue is FIFO
// and a batch is delivered or given up on as a whole), so when the delivered
// count grows by k the next k queued events are the ones delivered. The
// counters are read at most 1 ms apart (50 us while they move), which bounds
// the error of each latency.
//
// Threads: run_sink_test() blocks the calling thread; the sink's worker and
// the host's supervisor run on their own threads until it returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "zctl/core/config.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/probe.hpp"  // DurationSummary, summarize_durations, format_probe_duration

namespace zctl {

class PluginHost;

struct SinkTestOptions {
  uint64_t count = 10;                         // events to send, 1 to kMaxSinkTestEvents
  Duration timeout{std::chrono::seconds(30)};  // from the first event until the undelivered are given up
  std::string source_id;                       // event_src_id of the synthetic events: the node's id
};

inline constexpr uint64_t kMaxSinkTestEvents = 1'000'000;

// The configuration the test runs the sink with (pure): the configured one
// with everything that decides delivery -- plugin, its config, queue policy
// and batch size, retry, call_timeout -- and nothing that would touch the
// node's state or hide the test's events: no filter (node/sink_test passes
// whatever the sink selects), no spool, no dead-letter file. The queue holds
// at least `count` events, so the burst of test events is never shed: what
// is tested is the sink, not the queue's size. A new SinkConfig field starts
// at its default here until it is copied explicitly.
SinkConfig sink_test_config(const SinkConfig& configured, uint64_t count);

// The synthetic event `seq` (1-based) of run `run_id` (pure).
EventPtr make_sink_test_event(const std::string& source_id, const std::string& sink, const std::string& run_id,
                              uint64_t seq, uint64_t count, std::chrono::system_clock::time_point time);

// Which queued event was delivered when, from the sink's counters (pure).
// Events finish in the order they were queued; within one observation the
// delivered ones are taken before the failed ones (both finished inside the
// same interval, so only the order of their queueing times is uncertain).
class DeliveryTimeline {
 public:
  using Clock = std::chrono::steady_clock;

  // The times the events were queued, in queue order.
  explicit DeliveryTimeline(std::vector<Clock::time_point> queued);

  // The sink's cumulative delivered and failed counts, read at `now`.
  // Returns true when they moved since the previous observation.
  bool observe(Clock::time_point now, uint64_t delivered, uint64_t failed);

  uint64_t finished() const { return next_; }  // delivered or failed so far
  bool all_finished() const { return next_ >= queued_.size(); }
  Clock::time_point last_finished_at() const { return last_finished_at_; }
  // Queued -> delivery seen, of every event seen delivered, in queue order.
  const std::vector<ProbeDuration>& delivered_latencies() const { return latencies_; }

 private:
  std::vector<Clock::time_point> queued_;
  std::vector<ProbeDuration> latencies_;
  uint64_t next_ = 0;  // index of the first event not yet finished
  uint64_t delivered_ = 0;
  uint64_t failed_ = 0;
  Clock::time_point last_finished_at_{};
};

struct SinkTestReport {
  std::string sink;
  std::string plugin;          // as configured
  std::string plugin_version;  // from the plugin's descriptor
  std::string plugin_path;     // the file loaded
  std::string source_id;
  std::string run_id;  // 16 hex digits, in every event of the run
  uint64_t count = 0;  // events sent (seq 1..count)
  Duration timeout{0};

  uint64_t delivered = 0;
  uint64_t failed = 0;       // given up on: rejected by the plugin or out of retry.max_attempts
  uint64_t undelivered = 0;  // neither when the wait ended (timeout); discarded at stop
  uint64_t retried = 0;      // failed delivery attempts that were retried, counted per event
  uint64_t batches = 0;      // batches delivered
  bool timed_out = false;    // the wait ended at the timeout with events unfinished

  ProbeDuration elapsed{0};      // first event queued -> last one finished, or the timeout
  double events_per_second = 0;  // delivered / elapsed
  DurationSummary latency;       // per delivered event: queued -> delivery seen

  bool up = false;                          // the sink's health when the wait ended
  std::string down_reason;                  // why not up
  std::vector<std::string> health_reasons;  // distinct reasons it was unhealthy during the run, at most 5
  bool abandoned = false;                   // a plugin call never returned; its thread was left behind

  // Every event delivered, and within the timeout.
  bool pass() const { return delivered == count && !timed_out; }
  // One sentence per reason the test failed; empty when it passed.
  std::vector<std::string> failures() const;
};

// Runs the test. Throws SinkSetupError when the plugin cannot be found or
// loaded or rejects the sink's config (the same message `zctl serve` gives),
// std::invalid_argument for options out of range, and std::runtime_error
// when the run cannot be set up (no temporary directory).
SinkTestReport run_sink_test(const SinkConfig& sink, const PluginHost& plugins, const SinkTestOptions& options);

// The report as one JSON object (fields in man/zctl-sink.1), no newline.
std::string sink_test_report_json(const SinkTestReport& report);

}  // namespace zctl
