#include "zctl/core/sink_test.hpp"
#include "report_json.hpp"


#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <thread>
#include <variant>

#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/seq_store.hpp"
#include "zctl/core/sink_host.hpp"

namespace zctl {

namespace {

using Clock = std::chrono::steady_clock;

// Counter reads while deliveries come in quickly, backing off to this while
// nothing moves (a retry backoff, a slow server).
constexpr auto kPollFastest = std::chrono::microseconds(50);
constexpr auto kPollSlowest = std::chrono::milliseconds(1);
// After the wait: time for the worker to flush and destroy its instance.
constexpr auto kStopDrain = std::chrono::seconds(5);
constexpr size_t kMaxHealthReasons = 5;

std::string random_run_id() {
  std::random_device device;
  std::uniform_int_distribution<uint64_t> any;
  const uint64_t id = any(device);
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(id));
  return text;
}

// The host announces sink/* events on a bus; the test's bus needs a sequence
// file, which goes in a scratch directory (never the node's data dir).
class ScratchDir {
 public:
  ScratchDir() {
    std::error_code ec;
    const auto base = std::filesystem::temp_directory_path(ec);
    std::string tmpl = ((ec ? std::filesystem::path("/tmp") : base) / "zctl-sink-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("cannot create a scratch directory " + tmpl + ": " + std::strerror(errno));
    }
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

SinkConfig sink_test_config(const SinkConfig& configured, uint64_t count) {
  SinkConfig c;
  c.name = configured.name;
  c.plugin = configured.plugin;
  c.config_json = configured.config_json;
  c.queue = configured.queue;
  c.queue.max_events = std::max<uint64_t>(configured.queue.max_events, count);
  c.retry = configured.retry;
  c.call_timeout = configured.call_timeout;
  return c;
}

EventPtr make_sink_test_event(const std::string& source_id, const std::string& sink, const std::string& run_id,
                              uint64_t seq, uint64_t count, std::chrono::system_clock::time_point time) {
  auto event = std::make_shared<Event>();
  event->seq = seq;
  event->event_namespace = "node";
  event->event_type = "sink_test";
  event->time = time;
  event->json =
      serialize_event("node", "sink_test", source_id, time, seq,
                      EventFields().add("test", true).add("sink", sink).add("runId", run_id).add("count", count));
  return event;
}

// ---- DeliveryTimeline -----------------------------------------------------------

DeliveryTimeline::DeliveryTimeline(std::vector<Clock::time_point> queued) : queued_(std::move(queued)) {
  latencies_.reserve(queued_.size());
}

bool DeliveryTimeline::observe(Clock::time_point now, uint64_t delivered, uint64_t failed) {
  // Counters only grow: a value below the last one seen is ignored.
  const uint64_t new_delivered = delivered > delivered_ ? delivered - delivered_ : 0;
  const uint64_t new_failed = failed > failed_ ? failed - failed_ : 0;
  delivered_ = std::max(delivered_, delivered);
  failed_ = std::max(failed_, failed);
  if (new_delivered == 0 && new_failed == 0) return false;
  for (uint64_t i = 0; i < new_delivered && next_ < queued_.size(); ++i, ++next_) {
    latencies_.push_back(std::chrono::duration_cast<ProbeDuration>(now - queued_[next_]));
  }
  next_ = std::min<uint64_t>(next_ + new_failed, queued_.size());
  last_finished_at_ = now;
  return true;
}

// ---- the run ---------------------------------------------------------------------

std::vector<std::string> SinkTestReport::failures() const {
  std::vector<std::string> out;
  if (failed > 0) {
    out.push_back(plural(failed, "event was", "events were") +
                  " given up on: rejected by the plugin or out of retries (the reason is in the log)");
  }
  if (undelivered > 0) {
    out.push_back(plural(undelivered, "event was", "events were") + " not delivered within the " +
                  format_duration(timeout) + " timeout");
  }
  if (timed_out && undelivered == 0 && failed == 0) {
    out.push_back("the last events were delivered only after the " + format_duration(timeout) +
                  " timeout, while the sink was stopping");
  }
  if (abandoned) out.push_back("a plugin call did not return; the sink's worker was abandoned");
  if (out.empty() && !pass()) {
    out.push_back(std::to_string(delivered) + " of " + std::to_string(count) + " events delivered");
  }
  return out;
}

SinkTestReport run_sink_test(const SinkConfig& configured, const PluginHost& plugins, const SinkTestOptions& options) {
  if (options.count < 1 || options.count > kMaxSinkTestEvents) {
    throw std::invalid_argument("count must be from 1 to " + std::to_string(kMaxSinkTestEvents));
  }
  if (options.timeout <= Duration(0)) throw std::invalid_argument("timeout must be more than 0");

  SinkTestReport report;
  report.sink = configured.name;
  report.plugin = configured.plugin;
  report.source_id = options.source_id;
  report.run_id = random_run_id();
  report.count = options.count;
  report.timeout = options.timeout;
  const SinkConfig config = sink_test_config(configured, options.count);

  // What a node has around its sinks, minus everything persistent. Held by
  // pointer: a worker abandoned inside its plugin keeps using the metrics.
  ScratchDir scratch;
  auto seq = std::make_unique<SeqStore>(scratch.path() + "/seq");
  auto journal = std::make_unique<Journal>(1024);
  auto metrics = std::make_unique<MetricsRegistry>();
  auto bus = std::make_unique<EventBus>(options.source_id, *seq, *journal, *metrics);
  SinkHost host(plugins, *metrics, *bus);
  host.start({config});  // throws SinkSetupError, as `zctl serve` would

  if (const auto loaded = plugins.load_by_name(config.plugin);
      const auto* plugin = std::get_if<std::shared_ptr<LoadedPlugin>>(&loaded)) {
    report.plugin_version = (*plugin)->descriptor().version ? (*plugin)->descriptor().version : "";
    report.plugin_path = (*plugin)->path();
  }

  // The worker's own counters (looking a family up again returns it):
  // atomics, cheap enough to read every 50 us.
  auto& events_family = metrics->counter("controller_sink_events_total", "", {"sink", "result"});
  const Counter& delivered = events_family.with({config.name, "delivered"});
  const Counter& failed = events_family.with({config.name, "failed"});
  const Counter& retried = events_family.with({config.name, "retried"});
  const Histogram& delivery =
      metrics->histogram("controller_sink_delivery_seconds", "", {"sink"}, MetricsRegistry::latency_buckets())
          .with({config.name});

  // Health takes the worker's lock: look less often.
  constexpr auto kHealthEvery = std::chrono::milliseconds(10);
  const auto look_at_health = [&] {
    for (const auto& s : host.status()) {
      if (s.name != config.name) continue;
      report.up = s.up;
      report.down_reason = s.up ? std::string() : s.reason;
      if (!s.up && !s.reason.empty() && report.health_reasons.size() < kMaxHealthReasons &&
          std::find(report.health_reasons.begin(), report.health_reasons.end(), s.reason) ==
              report.health_reasons.end()) {
        report.health_reasons.push_back(s.reason);
      }
    }
  };

  // One burst, each event built just before it is queued (as the node's
  // bus does), so only the queue holds undelivered events.
  std::vector<Clock::time_point> queued;
  queued.reserve(options.count);
  const auto started = Clock::now();
  for (uint64_t n = 1; n <= options.count; ++n) {
    EventPtr event = make_sink_test_event(options.source_id, config.name, report.run_id, n, options.count,
                                          std::chrono::system_clock::now());
    queued.push_back(Clock::now());
    host.consume(event);
  }
  DeliveryTimeline timeline(std::move(queued));

  const auto deadline = started + options.timeout;
  auto interval = std::chrono::duration_cast<Clock::duration>(kPollFastest);
  auto health_seen = Clock::time_point{};
  for (;;) {
    const auto now = Clock::now();
    const bool moved = timeline.observe(now, delivered.value(), failed.value());
    if (now - health_seen >= kHealthEvery) {
      look_at_health();
      health_seen = now;
    }
    if (timeline.all_finished()) break;
    if (now >= deadline) {
      report.timed_out = true;
      break;
    }
    interval = moved ? std::chrono::duration_cast<Clock::duration>(kPollFastest)
                     : std::min<Clock::duration>(interval * 2, kPollSlowest);
    std::this_thread::sleep_for(std::min<Clock::duration>(interval, deadline - now));
  }
  look_at_health();

  // On a timeout, stop at once: the queue is discarded and a batch in flight
  // gets only the worker's grace to finish. Otherwise the worker flushes.
  report.abandoned = !host.stop(report.timed_out ? Duration(0) : kStopDrain);
  // A batch in flight may have finished while the worker stopped: count it.
  timeline.observe(Clock::now(), delivered.value(), failed.value());
  report.delivered = std::min(delivered.value(), options.count);
  report.failed = std::min(failed.value(), options.count - report.delivered);
  report.undelivered = options.count - report.delivered - report.failed;
  report.retried = retried.value();
  report.batches = delivery.count();
  report.elapsed = std::chrono::duration_cast<ProbeDuration>(
      (report.timed_out ? deadline : std::max(timeline.last_finished_at(), started)) - started);
  const double seconds = std::chrono::duration<double>(report.elapsed).count();
  report.events_per_second = seconds > 0 ? static_cast<double>(report.delivered) / seconds : 0;
  report.latency = summarize_durations(timeline.delivered_latencies());

  if (report.abandoned) {
    // The abandoned thread still updates these; they must outlive it, and
    // the process ends soon after a test.
    (void)metrics.release();
  }
  return report;
}

// ---- JSON ----------------------------------------------------------------------

std::string sink_test_report_json(const SinkTestReport& r) {
  using namespace report_json;
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  key(w, "sink");
  string(w, r.sink);
  key(w, "plugin");
  string(w, r.plugin);
  key(w, "pluginVersion");
  string(w, r.plugin_version);
  key(w, "pluginPath");
  string(w, r.plugin_path);
  key(w, "sourceId");
  string(w, r.source_id);
  key(w, "runId");
  string(w, r.run_id);
  key(w, "count");
  w.Uint64(r.count);
  key(w, "timeoutMs");
  w.Int64(r.timeout.count());
  key(w, "delivered");
  w.Uint64(r.delivered);
  key(w, "failed");
  w.Uint64(r.failed);
  key(w, "undelivered");
  w.Uint64(r.undelivered);
  key(w, "retried");
  w.Uint64(r.retried);
  key(w, "batches");
  w.Uint64(r.batches);
  key(w, "timedOut");
  w.Bool(r.timed_out);
  key(w, "elapsedMs");
  ms(w, r.elapsed);
  key(w, "eventsPerSecond");
  w.Double(std::round(r.events_per_second * 10) / 10);
  key(w, "latency");
  summary(w, r.latency);
  key(w, "up");
  w.Bool(r.up);
  key(w, "downReason");
  if (r.up) {
    w.Null();
  } else {
    string(w, r.down_reason);
  }
  key(w, "unhealthyReasons");
  w.StartArray();
  for (const auto& reason : r.health_reasons) string(w, reason);
  w.EndArray();
  key(w, "abandoned");
  w.Bool(r.abandoned);
  key(w, "verdict");
  string(w, r.pass() ? "pass" : "fail");
  key(w, "failures");
  w.StartArray();
  for (const auto& failure : r.failures()) string(w, failure);
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace zctl
