#include <catch2/catch.hpp>

#include <algorithm>

#include "event_filter.hpp"
#include "fake_sinks.hpp"
#include "sink_worker.hpp"
#include "zctl/core/metrics.hpp"

using namespace zctl;
using namespace zctl::test;
using namespace std::chrono_literals;

namespace {

EventPtr make_event(uint64_t seq, std::string ns = "node", std::string type = "started") {
  auto e = std::make_shared<Event>();
  e->seq = seq;
  e->event_namespace = std::move(ns);
  e->event_type = std::move(type);
  e->json = "{\"seq\":" + std::to_string(seq) + "}";
  return e;
}

SinkConfig fast_config(FakeScript& script) { return fast_sink_config(script, "fake1"); }

double metric(MetricsRegistry& m, const std::string& sink, const std::string& result) {
  return static_cast<double>(m.counter("controller_sink_events_total", "", {"sink", "result"}).with({sink, result}).value());
}

uint64_t dropped_for(const SinkReport& r, const std::string& reason) {
  for (const auto& [why, n] : r.dropped) {
    if (why == reason) return n;
  }
  return 0;
}

// The supervisor rate-limits drop reports to one a second; tests ask as if
// time had moved on.
SinkReport report_later(SinkWorker& w) { return w.take_report(SinkWorker::Clock::now() + std::chrono::hours(1)); }

}  // namespace

TEST_CASE("worker delivers every event once, in order, in batches of at most batch_max", "[sink]") {
  FakeScript script;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 95; ++i) REQUIRE(worker.offer(make_event(i)));
  REQUIRE(eventually([&] { return script.seqs().size() == 95; }));
  const auto seqs = script.seqs();
  for (size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == i + 1);
  for (auto size : script.batch_sizes) CHECK(size <= 10);
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
  CHECK(metric(metrics, "fake1", "delivered") == 95);
  CHECK(metric(metrics, "fake1", "dropped") == 0);
}

TEST_CASE("worker retries a batch until the plugin accepts it, without losing or reordering", "[sink]") {
  FakeScript script;
  script.first_results = {ZCTL_SINK_RETRY, ZCTL_SINK_RETRY};
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 5; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] { return script.seqs().size() == 5; }));
  CHECK(script.seqs() == std::vector<uint64_t>{1, 2, 3, 4, 5});
  CHECK(script.emit_calls >= 3);
  CHECK(metric(metrics, "fake1", "retried") >= 2);
  CHECK(metric(metrics, "fake1", "delivered") == 5);
}

TEST_CASE("three failed attempts make the sink unhealthy; a delivery recovers it", "[sink]") {
  // The outage lasts until the test ends it, so the unhealthy state is not a
  // window the polling could miss on a slow machine.
  FakeScript script;
  script.failing = true;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  // The third failure marks it unhealthy once emit has returned.
  REQUIRE(eventually([&] { return script.emit_calls >= 3 && !worker.up(); }));
  SinkReport report = worker.take_report(SinkWorker::Clock::now());
  REQUIRE(report.became_unhealthy);
  CHECK(report.became_unhealthy->find("scripted result 1") != std::string::npos);
  CHECK_FALSE(worker.up());
  script.failing = false;
  // The plugin records the event inside emit(); the worker counts itself up
  // only once emit() has returned OK, a moment later.
  REQUIRE(eventually([&] { return script.seqs().size() == 1 && worker.up(); }));
  // Recovery is announced once the sink has stayed healthy for a second.
  report = worker.take_report(SinkWorker::Clock::now());
  CHECK_FALSE(report.recovered);
  report = worker.take_report(SinkWorker::Clock::now() + std::chrono::milliseconds(1100));
  CHECK(report.recovered);
  CHECK_FALSE(report.became_unhealthy);
  // One announcement per transition.
  report = worker.take_report(SinkWorker::Clock::now() + std::chrono::seconds(5));
  CHECK_FALSE(report.recovered);
  CHECK_FALSE(report.became_unhealthy);
}

TEST_CASE("a sink that flaps is announced unhealthy once, and recovered only when it stays healthy", "[sink]") {
  // Each outage lasts until the test ends it, so no state below is a window
  // the polling could miss on a slow machine.
  FakeScript script;
  script.failing = true;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.emit_calls >= 3 && !worker.up(); }));
  const auto t0 = SinkWorker::Clock::now();
  CHECK(worker.take_report(t0).became_unhealthy);
  script.failing = false;
  REQUIRE(eventually([&] { return script.seqs().size() == 1 && worker.up(); }));
  // Healthy again, then failing again within the second: no announcement in between.
  script.failing = true;
  worker.offer(make_event(2));
  REQUIRE(eventually([&] { return !worker.up(); }));
  const SinkReport flap = worker.take_report(t0 + std::chrono::seconds(5));
  CHECK_FALSE(flap.recovered);
  CHECK_FALSE(flap.became_unhealthy);  // still the same unhealthy spell
  script.failing = false;
  REQUIRE(eventually([&] { return script.seqs().size() == 2 && worker.up(); }));
  CHECK(worker.take_report(SinkWorker::Clock::now() + std::chrono::seconds(2)).recovered);
}

TEST_CASE("a permanent reject is not retried and is reported as dropped", "[sink]") {
  FakeScript script;
  script.first_results = {ZCTL_SINK_REJECT};
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "failed") == 1; }));
  worker.offer(make_event(2));
  REQUIRE(eventually([&] { return script.seqs() == std::vector<uint64_t>{2}; }));
  CHECK(script.emit_calls == 2);
  CHECK(dropped_for(report_later(worker), "rejected") == 1);
  CHECK(metric(metrics, "fake1", "dropped") == 0);  // attempted: counted as failed, not dropped
}

TEST_CASE("max_attempts bounds retries", "[sink]") {
  FakeScript script;
  script.then = ZCTL_SINK_RETRY;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.retry.max_attempts = 3;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "failed") == 1; }));
  CHECK(script.emit_calls == 3);
  CHECK(dropped_for(report_later(worker), "retries_exhausted") == 1);
}

TEST_CASE("an invalid result code is treated as a failure, never as success", "[sink]") {
  FakeScript script;
  script.first_results = {77};
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.seqs().size() == 1; }));
  CHECK(script.emit_calls == 2);
  CHECK(metric(metrics, "fake1", "retried") == 1);
}

TEST_CASE("PENDING without the async capability is a failure", "[sink]") {
  FakeScript script;
  script.first_results = {ZCTL_SINK_PENDING};
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(/*async=*/false), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.seqs().size() == 1; }));
  CHECK(script.emit_calls == 2);
}

TEST_CASE("asynchronous completion: delivered only when the plugin completes", "[sink]") {
  FakeScript script;
  script.async = true;
  script.then = ZCTL_SINK_PENDING;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(/*async=*/true), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 25; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "delivered") == 25; }));
  CHECK(metric(metrics, "fake1", "retried") == 0);
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
}

TEST_CASE("a pipelining plugin gets several batches at once, delivered once each and in order", "[sink]") {
  FakeScript script;
  script.async = true;
  script.then = ZCTL_SINK_PENDING;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(/*async=*/true, /*pipeline=*/true), metrics);
  worker.start();
  // More batches of 10 than the pipeline holds, so its depth is reached.
  constexpr uint64_t kEvents = 20 * SinkWorker::kPipelineDepth;
  for (uint64_t i = 1; i <= kEvents; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "delivered") == kEvents; }));
  CHECK(script.seqs() == [] {
    std::vector<uint64_t> all(kEvents);
    for (uint64_t i = 0; i < kEvents; ++i) all[i] = i + 1;
    return all;
  }());
  CHECK(script.max_in_flight > 1);  // completions take 2 ms: batches overlapped
  CHECK(static_cast<size_t>(script.max_in_flight) <= SinkWorker::kPipelineDepth);  // never more than its depth
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
}

TEST_CASE("without the pipeline capability an asynchronous plugin has one batch pending at a time", "[sink]") {
  FakeScript script;
  script.async = true;
  script.then = ZCTL_SINK_PENDING;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(/*async=*/true), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 60; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "delivered") == 60; }));
  CHECK(script.max_in_flight == 1);
}

TEST_CASE("a pipelined batch that fails is retried alone, its attempts counted, nothing lost", "[sink]") {
  FakeScript script;
  script.async = true;
  script.first_results = {ZCTL_SINK_PENDING, ZCTL_SINK_RETRY};  // the second batch fails once, synchronously
  script.then = ZCTL_SINK_PENDING;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.retry.max_attempts = 2;
  SinkWorker worker(config, fake_plugin(/*async=*/true, /*pipeline=*/true), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 100; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] { return metric(metrics, "fake1", "delivered") == 100; }));
  auto seqs = script.seqs();
  std::sort(seqs.begin(), seqs.end());
  CHECK(std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end());  // none twice
  CHECK(seqs.size() == 100);
  CHECK(metric(metrics, "fake1", "retried") > 0);
  CHECK(metric(metrics, "fake1", "failed") == 0);  // its second attempt, within max_attempts, delivered it
}

TEST_CASE("filters select namespaces and type globs", "[sink]") {
  FakeScript script;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.filter.namespaces = {"cluster", "connection"};
  config.filter.types = {"state.*", "stray"};
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1, "cluster", "state.has_leader"));
  worker.offer(make_event(2, "cluster", "peer.connected"));
  worker.offer(make_event(3, "connection", "stray"));
  worker.offer(make_event(4, "node", "stray"));
  worker.offer(make_event(5, "cluster", "state.is_leaderless"));
  CHECK(worker.stop(SinkWorker::Clock::now() + 2s));
  CHECK(script.seqs() == std::vector<uint64_t>{1, 3, 5});
}

TEST_CASE("glob_match", "[sink]") {
  CHECK(glob_match("state.*", "state.has_leader"));
  CHECK_FALSE(glob_match("state.*", "leadership.gained"));
  CHECK(glob_match("*leader*", "state.is_leaderless"));
  CHECK(glob_match("stray", "stray"));
  CHECK_FALSE(glob_match("stray", "strays"));
  CHECK(glob_match("?tray", "stray"));
  CHECK(glob_match("*", ""));
  CHECK_FALSE(glob_match("a*b*c", "aXbY"));
  CHECK(glob_match("a*b*c", "aXbYc"));
}

TEST_CASE("when_full policies: drop_newest, drop_oldest, block with timeout", "[sink]") {
  FakeScript script;
  script.hang_ms = 60000;  // the first emit hangs, so the queue fills behind it
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.queue.max_events = 4;
  config.queue.batch_max = 1;

  SECTION("drop_newest keeps the oldest queued events") {
    config.queue.when_full = WhenFull::drop_newest;
    SinkWorker worker(config, fake_plugin(), metrics);
    worker.start();
    worker.offer(make_event(1));
    REQUIRE(eventually([&] { return script.emit_calls == 1; }));  // 1 is in flight
    for (uint64_t i = 2; i <= 5; ++i) CHECK(worker.offer(make_event(i)));
    CHECK_FALSE(worker.offer(make_event(6)));
    CHECK_FALSE(worker.offer(make_event(7)));
    script.hang_ms = 0;
    script.release = true;
    REQUIRE(eventually([&] { return script.seqs().size() == 5; }));
    CHECK(script.seqs() == std::vector<uint64_t>{1, 2, 3, 4, 5});
    CHECK(dropped_for(report_later(worker), "queue_full") == 2);
    CHECK(metric(metrics, "fake1", "dropped") == 2);
  }
  SECTION("drop_oldest keeps the newest queued events") {
    config.queue.when_full = WhenFull::drop_oldest;
    SinkWorker worker(config, fake_plugin(), metrics);
    worker.start();
    worker.offer(make_event(1));
    REQUIRE(eventually([&] { return script.emit_calls == 1; }));
    for (uint64_t i = 2; i <= 7; ++i) worker.offer(make_event(i));
    script.hang_ms = 0;
    script.release = true;
    REQUIRE(eventually([&] { return script.seqs().size() == 5; }));
    CHECK(script.seqs() == std::vector<uint64_t>{1, 4, 5, 6, 7});
    CHECK(dropped_for(report_later(worker), "queue_full") == 2);
  }
  SECTION("block waits at most block_timeout, then sheds until the queue drains") {
    config.queue.when_full = WhenFull::block;
    config.queue.block_timeout = 20ms;
    SinkWorker worker(config, fake_plugin(), metrics);
    worker.start();
    worker.offer(make_event(1));
    REQUIRE(eventually([&] { return script.emit_calls == 1; }));
    for (uint64_t i = 2; i <= 5; ++i) CHECK(worker.offer(make_event(i)));
    const auto before = std::chrono::steady_clock::now();
    CHECK_FALSE(worker.offer(make_event(6)));  // waited, then gave up
    CHECK(std::chrono::steady_clock::now() - before >= 20ms);
    const auto before_shed = std::chrono::steady_clock::now();
    CHECK_FALSE(worker.offer(make_event(7)));  // stalled: sheds at once
    CHECK(std::chrono::steady_clock::now() - before_shed < 20ms);
    script.hang_ms = 0;
    script.release = true;
    REQUIRE(eventually([&] { return script.seqs().size() == 5; }));
    CHECK(worker.offer(make_event(8)));  // drained: accepted again
    REQUIRE(eventually([&] { return script.seqs().size() == 6; }));
    CHECK(dropped_for(report_later(worker), "queue_full") == 2);
  }
  SECTION("block lets a producer through as soon as space frees up") {
    config.queue.when_full = WhenFull::block;
    config.queue.block_timeout = 5s;
    script.hang_ms = 50;
    SinkWorker worker(config, fake_plugin(), metrics);
    worker.start();
    for (uint64_t i = 1; i <= 20; ++i) CHECK(worker.offer(make_event(i)));
    REQUIRE(eventually([&] { return script.seqs().size() == 20; }));
    CHECK(metric(metrics, "fake1", "dropped") == 0);
  }
}

TEST_CASE("a hung plugin call is detected and the sink marked unhealthy", "[sink]") {
  FakeScript script;
  script.hang_ms = 60000;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.call_timeout = 30ms;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.emit_calls == 1; }));
  std::this_thread::sleep_for(40ms);
  const SinkReport report = worker.take_report(SinkWorker::Clock::now());
  REQUIRE(report.became_unhealthy);
  CHECK(report.became_unhealthy->find("plugin call 'emit' has not returned") != std::string::npos);
  script.release = true;
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
}

TEST_CASE("a hung sink does not delay another sink", "[sink]") {
  FakeScript hung_script, healthy_script;
  hung_script.hang_ms = 60000;
  MetricsRegistry metrics;
  SinkConfig hung_config = fast_config(hung_script);
  hung_config.name = "hung";
  hung_config.queue.when_full = WhenFull::drop_newest;
  hung_config.queue.max_events = 10;
  SinkConfig healthy_config = fast_config(healthy_script);
  healthy_config.name = "healthy";
  SinkWorker hung(hung_config, fake_plugin(), metrics);
  SinkWorker healthy(healthy_config, fake_plugin(), metrics);
  hung.start();
  healthy.start();
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 1; i <= 1000; ++i) {
    auto e = make_event(i);
    hung.offer(e);
    healthy.offer(e);
  }
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  REQUIRE(eventually([&] { return healthy_script.seqs().size() == 1000; }));
  hung_script.release = true;
}

TEST_CASE("reopen and replace reach the plugin; replace keeps queued events", "[sink]") {
  FakeScript first, second;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(first), fake_plugin(), metrics);
  worker.start();
  worker.request_reopen();
  REQUIRE(eventually([&] { return first.reopen_calls == 1; }));
  first.hang_ms = 100;
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return first.emit_calls == 1; }));
  worker.offer(make_event(2));  // queued while 1 is in flight
  SinkConfig next = fast_config(second);
  worker.replace(next, fake_plugin());
  REQUIRE(eventually([&] { return second.seqs() == std::vector<uint64_t>{2}; }));
  CHECK(first.seqs() == std::vector<uint64_t>{1});
  CHECK(worker.config_fingerprint() == sink_config_fingerprint(next));
}

TEST_CASE("a create that fails transiently is retried by the worker", "[sink]") {
  FakeScript script;
  script.create_result = ZCTL_SINK_RETRY;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();  // does not throw: retryable
  CHECK_FALSE(worker.up());
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.create_calls >= 2; }));
  script.create_result = ZCTL_SINK_OK;
  REQUIRE(eventually([&] { return script.seqs().size() == 1; }));
}

TEST_CASE("a create that rejects the config fails start", "[sink]") {
  FakeScript script;
  script.create_result = ZCTL_SINK_REJECT;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  CHECK_THROWS_WITH(worker.start(), Catch::Contains("scripted create failure"));
}

TEST_CASE("stop drains the queue before destroying the instance", "[sink]") {
  FakeScript script;
  script.hang_ms = 2;
  MetricsRegistry metrics;
  SinkWorker worker(fast_config(script), fake_plugin(), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 50; ++i) worker.offer(make_event(i));
  CHECK(worker.stop(SinkWorker::Clock::now() + 5s));
  CHECK(script.seqs().size() == 50);
}

TEST_CASE("a reconfiguration reaches a sink stuck retrying, and the batch goes to the new instance", "[sink]") {
  FakeScript broken, fixed;
  broken.then = ZCTL_SINK_RETRY;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(broken);
  config.retry.initial = 10s;  // the worker sleeps in backoff when the reload comes
  config.retry.max = 10s;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return broken.emit_calls == 1; }));
  worker.replace(fast_config(fixed), fake_plugin());
  REQUIRE(eventually([&] { return fixed.seqs() == std::vector<uint64_t>{1}; }, 2s));
}

TEST_CASE("stop honours its deadline while the worker sleeps in backoff", "[sink]") {
  FakeScript script;
  script.then = ZCTL_SINK_RETRY;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  config.retry.initial = 30s;
  config.retry.max = 30s;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.emit_calls == 1; }));
  const auto start = std::chrono::steady_clock::now();
  CHECK(worker.stop(SinkWorker::Clock::now() + 100ms));  // stopped, not abandoned
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  CHECK(dropped_for(report_later(worker), "shutdown") == 1);
}

TEST_CASE("an idle sink keeps retrying a create that failed transiently", "[sink]") {
  FakeScript script;
  script.create_result = ZCTL_SINK_RETRY;
  MetricsRegistry metrics;
  SinkConfig config = fast_config(script);
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  CHECK_FALSE(worker.up());
  REQUIRE(eventually([&] { return script.create_calls >= 2; }, 5s));  // no event needed
  script.create_result = ZCTL_SINK_OK;
  REQUIRE(eventually([&] { return worker.up(); }, 5s));
}
