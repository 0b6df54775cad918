// `zctl sink test` in core: the pure parts (the test's sink config, the
// synthetic event, the delivery timeline) and whole runs against the
// recording test plugin (test-plugins/recording.so), loaded like any plugin.
#include <rapidjson/document.h>
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "zctl/core/plugin_host.hpp"
#include "zctl/core/sink_host.hpp"
#include "zctl/core/sink_test.hpp"

using namespace zctl;
using namespace std::chrono_literals;

namespace {

using Clock = DeliveryTimeline::Clock;

struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    char tmpl[] = "/tmp/zctl-unit-sink-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~ScratchDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

SinkConfig recording_sink(const std::string& config_json) {
  SinkConfig c;
  c.name = "rec";
  c.plugin = "recording";
  c.config_json = config_json;
  c.retry.initial = 1ms;
  c.retry.max = 2ms;
  return c;
}

SinkTestOptions options(uint64_t count, Duration timeout = 10s) {
  SinkTestOptions o;
  o.count = count;
  o.timeout = timeout;
  o.source_id = "n1";
  return o;
}

}  // namespace

TEST_CASE("the test runs the sink's delivery settings, without its filter, spool or shedding", "[sink_test]") {
  SinkConfig c;
  c.name = "audit";
  c.plugin = "file";
  c.config_json = R"({"path":"/x"})";
  c.filter.namespaces = {"cluster"};
  c.filter.types = {"state.*"};
  c.queue.max_events = 50;
  c.queue.when_full = WhenFull::drop_newest;
  c.queue.batch_max = 7;
  c.retry.initial = 3ms;
  c.retry.max = 9ms;
  c.retry.max_attempts = 4;
  c.spool.dir = "/var/lib/zctl/spool/audit";
  c.dead_letter.path = "/var/lib/zctl/audit.dead.jsonl";
  c.call_timeout = 1234ms;

  const SinkConfig t = sink_test_config(c, 200);
  CHECK(t.name == "audit");
  CHECK(t.plugin == "file");
  CHECK(t.config_json == R"({"path":"/x"})");
  CHECK(t.filter.namespaces.empty());
  CHECK(t.filter.types.empty());
  CHECK(t.spool.dir.empty());
  CHECK(t.dead_letter.path.empty());
  CHECK(t.queue.max_events == 200);  // raised to hold the whole burst
  CHECK(t.queue.when_full == WhenFull::drop_newest);
  CHECK(t.queue.batch_max == 7);
  CHECK(t.retry.initial == 3ms);
  CHECK(t.retry.max == 9ms);
  CHECK(t.retry.max_attempts == 4);
  CHECK(t.call_timeout == 1234ms);
  CHECK(sink_test_config(c, 10).queue.max_events == 50);  // never lowered
}

TEST_CASE("a synthetic event has the envelope, then test, sink, runId and count", "[sink_test]") {
  const auto time = std::chrono::system_clock::time_point(std::chrono::seconds(1736517288));
  const EventPtr e = make_sink_test_event("ctrl\"1", "audit", "00ff00ff00ff00ff", 3, 10, time);
  CHECK(e->seq == 3);
  CHECK(e->event_namespace == "node");
  CHECK(e->event_type == "sink_test");
  CHECK(e->time == time);
  rapidjson::Document doc;
  doc.Parse(e->json.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  std::vector<std::string> keys;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) keys.emplace_back(it->name.GetString());
  CHECK(keys == std::vector<std::string>{"namespace", "eventType", "event_src_id", "timestamp", "seq", "test", "sink",
                                         "runId", "count"});
  CHECK(std::string(doc["event_src_id"].GetString()) == "ctrl\"1");
  CHECK(doc["seq"].GetUint64() == 3);
  CHECK(doc["test"].GetBool());
  CHECK(std::string(doc["sink"].GetString()) == "audit");
  CHECK(std::string(doc["runId"].GetString()) == "00ff00ff00ff00ff");
  CHECK(doc["count"].GetUint64() == 10);
  CHECK(std::string(doc["timestamp"].GetString()) == format_rfc3339(time));
}

TEST_CASE("the timeline gives each delivered event its own latency, in queue order", "[sink_test]") {
  const Clock::time_point t0{};
  DeliveryTimeline timeline({t0, t0 + 1ms, t0 + 2ms, t0 + 3ms, t0 + 4ms});
  CHECK_FALSE(timeline.observe(t0 + 5ms, 0, 0));  // nothing moved
  CHECK(timeline.observe(t0 + 10ms, 2, 0));       // events 0 and 1
  CHECK(timeline.finished() == 2);
  CHECK(timeline.observe(t0 + 20ms, 2, 1));  // event 2 failed: no latency
  CHECK_FALSE(timeline.observe(t0 + 25ms, 2, 1));
  CHECK(timeline.observe(t0 + 30ms, 4, 1));  // events 3 and 4
  CHECK(timeline.all_finished());
  CHECK(timeline.last_finished_at() == t0 + 30ms);
  CHECK(timeline.delivered_latencies() == std::vector<ProbeDuration>{10ms, 9ms, 27ms, 26ms});
}

TEST_CASE("the timeline takes delivered before failed within one look, and ignores counts past the end",
          "[sink_test]") {
  const Clock::time_point t0{};
  DeliveryTimeline timeline({t0, t0, t0 + 1ms});
  CHECK(timeline.observe(t0 + 4ms, 1, 1));
  CHECK(timeline.delivered_latencies() == std::vector<ProbeDuration>{4ms});
  CHECK(timeline.observe(t0 + 6ms, 9, 1));  // another sink's numbers would overshoot: clamp
  CHECK(timeline.all_finished());
  CHECK(timeline.delivered_latencies() == std::vector<ProbeDuration>{4ms, 5ms});
}

TEST_CASE("sink test: every event delivered through retries and async completion", "[sink_test]") {
  ScratchDir dir;
  const PluginHost plugins({ZCTL_TEST_PLUGIN_DIR});
  const SinkConfig sink = recording_sink(R"({"path":")" + dir.file("events") + R"(","calls_path":")" +
                                         dir.file("calls") + R"(","async":true,"async_delay_ms":2,"fail_first":2})");
  const SinkTestReport r = run_sink_test(sink, plugins, options(25));
  CHECK(r.pass());
  CHECK(r.failures().empty());
  CHECK(r.delivered == 25);
  CHECK(r.failed == 0);
  CHECK(r.undelivered == 0);
  CHECK_FALSE(r.timed_out);
  CHECK(r.retried >= 2);  // two failed attempts of at least one event each
  CHECK(r.batches >= 1);
  CHECK(r.latency.count == 25);
  CHECK(r.latency.min <= r.latency.p50);
  CHECK(r.latency.p99 <= r.latency.max);
  CHECK(r.latency.max <= r.elapsed);
  CHECK(r.plugin_path == std::string(ZCTL_TEST_PLUGIN_DIR) + "/recording.so");
  CHECK(r.run_id.size() == 16);

  // Each synthetic event reached the plugin once, seq 1..25, with this run's id.
  const auto lines = lines_of(dir.file("events"));
  REQUIRE(lines.size() == 25);
  for (size_t i = 0; i < lines.size(); ++i) {
    rapidjson::Document doc;
    doc.Parse(lines[i].c_str());
    REQUIRE_FALSE(doc.HasParseError());
    CHECK(doc["seq"].GetUint64() == i + 1);
    CHECK(std::string(doc["runId"].GetString()) == r.run_id);
    CHECK(std::string(doc["event_src_id"].GetString()) == "n1");
  }
  // The worker really retried: some emit was a third attempt.
  bool third_attempt = false;
  for (const auto& call : lines_of(dir.file("calls"))) {
    unsigned long long batch = 0, attempt = 0, size = 0;
    if (std::sscanf(call.c_str(), "emit %llu %llu %llu", &batch, &attempt, &size) == 3 && attempt == 3) {
      third_attempt = true;
    }
  }
  CHECK(third_attempt);
}

TEST_CASE("sink test: rejected events are failed, not undelivered, and fail the test", "[sink_test]") {
  const PluginHost plugins({ZCTL_TEST_PLUGIN_DIR});
  const SinkTestReport r = run_sink_test(recording_sink(R"({"reject_all":true})"), plugins, options(8));
  CHECK_FALSE(r.pass());
  CHECK(r.delivered == 0);
  CHECK(r.failed == 8);
  CHECK(r.undelivered == 0);
  CHECK(r.retried == 0);
  CHECK_FALSE(r.timed_out);
  CHECK(r.latency.count == 0);
  REQUIRE(r.failures().size() == 1);
  CHECK_THAT(r.failures()[0], Catch::Contains("8 events were given up on"));

  rapidjson::Document doc;
  const std::string json = sink_test_report_json(r);
  doc.Parse(json.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(doc["failed"].GetUint64() == 8);
  CHECK(std::string(doc["verdict"].GetString()) == "fail");
  CHECK(doc["latency"]["count"].GetUint64() == 0);
  CHECK_FALSE(doc["latency"].HasMember("p50Ms"));
  CHECK(doc["failures"].Size() == 1);
}

TEST_CASE("sink test: out of retries counts as failed, with every attempt counted", "[sink_test]") {
  const PluginHost plugins({ZCTL_TEST_PLUGIN_DIR});
  SinkConfig sink = recording_sink(R"({"fail_first":1000})");
  sink.retry.max_attempts = 3;
  sink.queue.batch_max = 1;  // one event per batch: the counts are exact
  const SinkTestReport r = run_sink_test(sink, plugins, options(4));
  CHECK(r.failed == 4);
  CHECK(r.retried == 12);  // 3 failed attempts per event
  CHECK(r.delivered == 0);
  CHECK_FALSE(r.up);  // three failures in a row make a sink unhealthy
  REQUIRE_FALSE(r.health_reasons.empty());
  CHECK_THAT(r.health_reasons[0], Catch::Contains("recording: fail_first"));
}

TEST_CASE("sink test: a hung sink is given up at the timeout and the run ends in bounded time", "[sink_test]") {
  const PluginHost plugins({ZCTL_TEST_PLUGIN_DIR});
  SinkConfig sink = recording_sink(R"({"hang_ms":600})");
  sink.queue.batch_max = 1;
  const auto started = Clock::now();
  const SinkTestReport r = run_sink_test(sink, plugins, options(3, 100ms));
  const auto took = Clock::now() - started;
  CHECK(r.timed_out);
  CHECK_FALSE(r.pass());
  CHECK(r.elapsed == 100ms);
  // The emit in progress at the timeout returns at 600 ms, while the worker
  // stops, and delivers its one event; the other two are discarded.
  CHECK(r.delivered == 1);
  CHECK(r.undelivered == 2);
  CHECK_FALSE(r.abandoned);
  CHECK(took < 3s);
  bool says_timeout = false;
  for (const auto& f : r.failures())
    says_timeout = says_timeout || f == "2 events were not delivered within the 100ms timeout";
  CHECK(says_timeout);
}

TEST_CASE("sink test: a plugin that refuses the config or cannot be found is a setup error", "[sink_test]") {
  const PluginHost plugins({ZCTL_TEST_PLUGIN_DIR});
  std::string refused;
  try {
    run_sink_test(recording_sink(R"({"colour":"red"})"), plugins, options(1));
  } catch (const SinkSetupError& e) {
    refused = e.what();
  }
  CHECK_THAT(refused, Catch::Contains("sink 'rec' (plugin recording): invalid config: ") &&
                          Catch::Contains("unknown key 'colour'"));
  SinkConfig missing = recording_sink("{}");
  missing.plugin = "no_such_plugin";
  CHECK_THROWS_AS(run_sink_test(missing, plugins, options(1)), SinkSetupError);
  CHECK_THROWS_AS(run_sink_test(recording_sink("{}"), plugins, options(0)), std::invalid_argument);
  CHECK_THROWS_AS(run_sink_test(recording_sink("{}"), plugins, options(1, 0ms)), std::invalid_argument);
}
