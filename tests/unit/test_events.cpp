#include <catch2/catch.hpp>

#include "temp_dir.hpp"

#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/seq_store.hpp"

using namespace zctl;

namespace {

using test::TempDir;

struct RecordingConsumer : EventConsumer {
  std::vector<EventPtr> events;
  void consume(const EventPtr& e) override { events.push_back(e); }
};

}  // namespace

TEST_CASE("timestamps are RFC 3339 with nanoseconds and the local offset", "[events]") {
  const auto t = std::chrono::system_clock::time_point(std::chrono::nanoseconds(1736535288151522421LL));
  const std::string text = format_rfc3339(t);
  CHECK(std::regex_match(text, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.151522421[+-]\d{2}:\d{2})")));
  ::setenv("TZ", "UTC", 1);
  ::tzset();
  // The per-thread cache is keyed by second, so use a different second.
  const auto t2 = t + std::chrono::seconds(1);
  CHECK(format_rfc3339(t2) == "2025-01-10T18:54:49.151522421+00:00");
  CHECK(format_rfc3339(std::chrono::system_clock::time_point(std::chrono::nanoseconds(5))) ==
        "1970-01-01T00:00:00.000000005+00:00");
}

TEST_CASE("timestamps stay exact for alternating seconds and for seconds that share a cache slot", "[events]") {
  ::setenv("TZ", "UTC", 1);
  ::tzset();
  using std::chrono::seconds;
  const auto base = std::chrono::system_clock::time_point(seconds(1736535300));
  for (int round = 0; round < 2; ++round) {
    CHECK(format_rfc3339(base) == "2025-01-10T18:55:00.000000000+00:00");
    CHECK(format_rfc3339(base + seconds(4)) == "2025-01-10T18:55:04.000000000+00:00");  // base's slot
    CHECK(format_rfc3339(base - seconds(2)) == "2025-01-10T18:54:58.000000000+00:00");  // a stray's start
  }
}

TEST_CASE("an event serialises its envelope first, then its fields, as valid JSON", "[events]") {
  EventFields fields;
  fields.add("remoteAddr", "10.0.0.9:51234")
      .add("graceMs", int64_t{30000})
      .add("bytesIn", uint64_t{7})
      .add("authenticated", false)
      .add_null("protocolVersion")
      .add("weird", std::string_view("quote\" backslash\\ newline\n ctrl\x01 utf8 \xc3\xa9"))
      .add_raw("peers", R"([{"id":"a"}])");
  const auto t = std::chrono::system_clock::now();
  const std::string json = serialize_event("connection", "stray", "ctrl1", t, 42, fields);
  CHECK(json.rfind(R"({"namespace":"connection","eventType":"stray","event_src_id":"ctrl1","timestamp":")", 0) == 0);
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(doc["seq"].GetUint64() == 42);
  CHECK(doc["graceMs"].GetInt64() == 30000);
  CHECK(doc["protocolVersion"].IsNull());
  CHECK(doc["authenticated"].IsFalse());
  CHECK(std::string(doc["weird"].GetString()) == "quote\" backslash\\ newline\n ctrl\x01 utf8 \xc3\xa9");
  CHECK(std::string(doc["peers"][0]["id"].GetString()) == "a");
  CHECK(json.find('\n') == std::string::npos);  // one event per line, always
}

TEST_CASE("journal keeps the newest events and reads from a seq", "[events]") {
  Journal journal(3);
  CHECK(journal.oldest_seq() == 0);
  for (uint64_t i = 1; i <= 5; ++i) {
    auto e = std::make_shared<Event>();
    e->seq = i;
    journal.append(e);
  }
  CHECK(journal.size() == 3);
  CHECK(journal.oldest_seq() == 3);
  CHECK(journal.newest_seq() == 5);
  std::vector<EventPtr> out;
  CHECK(journal.read_from(1, 10, out) == 3);  // caller sees that 1..2 are gone
  REQUIRE(out.size() == 3);
  CHECK(out[0]->seq == 3);
  out.clear();
  journal.read_from(5, 10, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0]->seq == 5);
  out.clear();
  journal.read_from(6, 10, out);
  CHECK(out.empty());
  out.clear();
  journal.read_from(3, 2, out);
  CHECK(out.size() == 2);
  auto stale = std::make_shared<Event>();
  stale->seq = 5;
  CHECK_THROWS(journal.append(stale));
}

TEST_CASE("seq continues contiguously after a clean stop and never reuses after a crash", "[events]") {
  TempDir dir;
  const std::string path = dir.file("seq");
  {
    SeqStore seq(path, 100);
    CHECK(seq.next() == 1);
    CHECK(seq.next() == 2);
    seq.close();
  }
  {
    SeqStore seq(path, 100);
    CHECK_FALSE(seq.recovered_from_crash());
    CHECK(seq.next() == 3);
    for (int i = 0; i < 150; ++i) seq.next();  // crosses a reservation block
    CHECK(seq.last() == 153);
    // Simulate kill -9: copy the state file as it is while running.
    std::filesystem::copy_file(path, dir.file("crashed"));
    seq.close();
  }
  std::filesystem::rename(dir.file("crashed"), path);
  SeqStore after_crash(path, 100);
  CHECK(after_crash.recovered_from_crash());
  const uint64_t next = after_crash.next();
  CHECK(next > 153);
  CHECK(next == 3 + 200);  // first reservation 102, second 202 -> starts at 203
}

TEST_CASE("a corrupt seq file is refused, not silently reset", "[events]") {
  TempDir dir;
  std::ofstream(dir.file("seq")) << "garbage\n";
  CHECK_THROWS_WITH(SeqStore(dir.file("seq")), Catch::Contains("corrupt sequence file"));
}

TEST_CASE("the bus numbers events, journals them and hands consumers the same bytes in order", "[events]") {
  TempDir dir;
  SeqStore seq(dir.file("seq"));
  Journal journal(10);
  MetricsRegistry metrics;
  EventBus bus("n1", seq, journal, metrics);
  RecordingConsumer a, b;
  bus.attach(&a);
  bus.attach(&b);
  bus.emit("node", "started");
  bus.emit("sink", "dropped", EventFields().add("sink", "x").add("count", uint64_t{3}));
  bus.detach(&b);
  bus.emit("node", "stopping");
  REQUIRE(a.events.size() == 3);
  REQUIRE(b.events.size() == 2);
  CHECK(a.events[0].get() == b.events[0].get());  // shared, serialised once
  CHECK(a.events[0]->seq == 1);
  CHECK(a.events[2]->seq == 3);
  CHECK(journal.newest_seq() == 3);
  CHECK(a.events[1]->json.find(R"("event_src_id":"n1")") != std::string::npos);
  CHECK(a.events[1]->json.find(R"("count":3)") != std::string::npos);
  CHECK(metrics.counter("controller_events_total", "", {"namespace", "type"}).with({"node", "started"}).value() == 1);
}
