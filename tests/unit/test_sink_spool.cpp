#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fake_sinks.hpp"
#include "sink_spool.hpp"
#include "sink_worker.hpp"
#include "temp_dir.hpp"
#include "zctl/core/metrics.hpp"

using namespace zctl;
using namespace zctl::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

EventPtr make_event(uint64_t seq, size_t padding = 0) {
  auto e = std::make_shared<Event>();
  e->seq = seq;
  e->event_namespace = "connection";
  e->event_type = "stray";
  e->time = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000) + std::chrono::nanoseconds(seq));
  e->json = "{\"seq\":" + std::to_string(seq) + ",\"pad\":\"" + std::string(padding, 'x') + "\"}";
  return e;
}

void append_range(SinkSpool& spool, uint64_t from, uint64_t to, size_t padding = 0) {
  std::vector<EventPtr> events;
  for (uint64_t i = from; i <= to; ++i) events.push_back(make_event(i, padding));
  spool.append(events.data(), events.size());
}

std::vector<uint64_t> seqs(const std::deque<EventPtr>& batch) {
  std::vector<uint64_t> out;
  for (const auto& e : batch) out.push_back(e->seq);
  return out;
}

std::vector<uint64_t> range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> out;
  for (uint64_t i = from; i <= to; ++i) out.push_back(i);
  return out;
}

std::vector<fs::path> segments(const TempDir& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir.path)) {
    if (entry.path().extension() == ".seg") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("spool: CRC-32C is the standard one, in hardware and in the table", "[spool]") {
  CHECK(detail::crc32c("123456789", 9) == 0xe3069283u);
  CHECK(detail::crc32c_portable("123456789", 9) == 0xe3069283u);
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 131 + 7));
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t len : {0, 1, 7, 8, 9, 63, 500, 993}) {
      CHECK(detail::crc32c(data.data() + start, len) == detail::crc32c_portable(data.data() + start, len));
    }
  }
}

TEST_CASE("spool: batches come out in order and leave only when finished", "[spool]") {
  TempDir dir;
  SinkSpool spool(dir.path.string(), 1 << 20);
  append_range(spool, 1, 25);
  CHECK(spool.events() == 25);
  auto batch = spool.take_batch(10);
  CHECK(seqs(batch) == range(1, 10));
  CHECK(seqs(spool.take_batch(10)) == range(1, 10));  // still in flight: the same batch again
  spool.finish_batch();
  CHECK(spool.events() == 15);
  CHECK(seqs(spool.take_batch(100)) == range(11, 25));
  spool.finish_batch();
  CHECK(spool.events() == 0);
  CHECK(spool.bytes() == 0);
  CHECK(spool.take_batch(10).empty());
}

TEST_CASE("spool: what was not finished survives a restart with the same bytes", "[spool]") {
  TempDir dir;
  {
    SinkSpool spool(dir.path.string(), 1 << 20);
    append_range(spool, 1, 30);
    spool.take_batch(10);
    spool.finish_batch();
    spool.take_batch(10);  // in flight when the process "dies": delivered again
  }
  SinkSpool spool(dir.path.string(), 1 << 20);
  CHECK(spool.recovered_events() == 20);
  CHECK(spool.discarded_bytes() == 0);
  auto batch = spool.take_batch(100);
  REQUIRE(seqs(batch) == range(11, 30));
  const auto expected = make_event(11);
  CHECK(batch.front()->json == expected->json);
  CHECK(batch.front()->event_namespace == "connection");
  CHECK(batch.front()->event_type == "stray");
  CHECK(batch.front()->time == expected->time);
}

TEST_CASE("spool: a record torn by a crash is cut off, the ones before it kept", "[spool]") {
  TempDir dir;
  {
    SinkSpool spool(dir.path.string(), 1 << 20);
    append_range(spool, 1, 5);
  }
  const auto files = segments(dir);
  REQUIRE(files.size() == 1);
  fs::resize_file(files[0], fs::file_size(files[0]) - 3);
  {
    SinkSpool spool(dir.path.string(), 1 << 20);
    CHECK(spool.recovered_events() == 4);
    CHECK(spool.discarded_bytes() > 0);
    append_range(spool, 6, 6);  // appends after the cut, not after the torn bytes
  }
  SinkSpool spool(dir.path.string(), 1 << 20);
  CHECK(seqs(spool.take_batch(100)) == std::vector<uint64_t>{1, 2, 3, 4, 6});
}

TEST_CASE("spool: a damaged byte in the middle cuts everything from that record on", "[spool]") {
  TempDir dir;
  uint64_t third_record = 0;
  {
    SinkSpool spool(dir.path.string(), 1 << 20);
    append_range(spool, 1, 5);
    third_record = 2 * SinkSpool::record_size(*make_event(1));
  }
  const auto file = segments(dir).at(0);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(third_record + 30));
    f.put('#');
  }
  SinkSpool spool(dir.path.string(), 1 << 20);
  CHECK(spool.recovered_events() == 2);
  CHECK(seqs(spool.take_batch(100)) == std::vector<uint64_t>{1, 2});
}

TEST_CASE("spool: a damaged cursor means delivering again, not losing", "[spool]") {
  TempDir dir;
  {
    SinkSpool spool(dir.path.string(), 1 << 20);
    append_range(spool, 1, 10);
    spool.take_batch(4);
    spool.finish_batch();
  }
  {
    std::fstream f(dir.file("cursor"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(9);
    f.put('\x7f');
  }
  SinkSpool spool(dir.path.string(), 1 << 20);
  CHECK(seqs(spool.take_batch(100)) == range(1, 10));
}

TEST_CASE("spool: segments roll over and finished ones are deleted", "[spool]") {
  TempDir dir;
  SinkSpool spool(dir.path.string(), 256 << 10);  // 64 KiB segments
  for (uint64_t i = 0; i < 20; ++i) append_range(spool, i * 10 + 1, i * 10 + 10, 900);  // ~9.3 KiB per append
  CHECK(segments(dir).size() >= 3);
  uint64_t delivered = 0;
  for (auto batch = spool.take_batch(7); !batch.empty(); batch = spool.take_batch(7)) {
    CHECK(batch.front()->seq == delivered + 1);
    delivered += batch.size();
    spool.finish_batch();
  }
  CHECK(delivered == 200);
  CHECK(segments(dir).size() == 1);
}

TEST_CASE("spool: a directory is used by one spool at a time", "[spool]") {
  TempDir dir;
  SinkSpool first(dir.path.string(), 1 << 20);
  CHECK_THROWS_WITH(SinkSpool(dir.path.string(), 1 << 20), Catch::Contains("in use by another sink or process"));
}

TEST_CASE("spool: an unusable directory is a clear error", "[spool]") {
  TempDir dir;
  std::ofstream(dir.file("file")) << "x";
  CHECK_THROWS_WITH(SinkSpool(dir.file("file") + "/spool", 1 << 20), Catch::Contains("cannot create spool directory"));
}

TEST_CASE("spool: drop_oldest frees room from the oldest events, never the batch in flight", "[spool]") {
  TempDir dir;
  const uint64_t size = SinkSpool::record_size(*make_event(10));
  SinkSpool spool(dir.path.string(), 10 * size);
  append_range(spool, 10, 19);
  CHECK_FALSE(spool.fits(size));
  CHECK(seqs(spool.take_batch(3)) == std::vector<uint64_t>{10, 11, 12});
  CHECK(spool.drop_oldest(2 * size) == 2);  // 13 and 14, not the batch in flight
  CHECK(spool.events() == 8);
  append_range(spool, 20, 21);
  spool.finish_batch();
  CHECK(seqs(spool.take_batch(100)) == std::vector<uint64_t>{15, 16, 17, 18, 19, 20, 21});
  spool.finish_batch();
  // Nothing in flight: the cursor itself moves.
  append_range(spool, 22, 31);
  CHECK(spool.drop_oldest(3 * size) == 3);
  CHECK(seqs(spool.take_batch(100)) == range(25, 31));
}

// --- the worker with a spool ----------------------------------------------

namespace {

SinkConfig spooled_config(FakeScript& script, const TempDir& dir, uint64_t max_bytes = 1 << 20) {
  SinkConfig c = fast_sink_config(script, "spooled");
  c.spool.dir = dir.file("spool");
  c.spool.max_bytes = max_bytes;
  return c;
}

double gauge(MetricsRegistry& m, const std::string& name, const std::string& sink) {
  return m.gauge(name, "", {"sink"}).with({sink}).value();
}

}  // namespace

TEST_CASE("worker with a spool: an outage fills the spool, not the queue, and recovery delivers in order", "[spool]") {
  TempDir dir;
  FakeScript script;
  script.failing = true;
  MetricsRegistry metrics;
  SinkConfig config = spooled_config(script, dir);
  config.queue.max_events = 50;  // smaller than what the outage brings
  config.queue.when_full = WhenFull::drop_newest;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  for (uint64_t i = 1; i <= 300; ++i) {
    REQUIRE(worker.offer(make_event(i)));
    if (i % 25 == 0) REQUIRE(eventually([&] { return gauge(metrics, "controller_sink_spool_events", "spooled") >= double(i); }));
  }
  CHECK(worker.queued() == 300);
  CHECK(gauge(metrics, "controller_sink_spool_bytes", "spooled") > 0);
  script.failing = false;
  REQUIRE(eventually([&] { return script.seqs().size() >= 300; }));
  CHECK(script.seqs() == range(1, 300));
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
  CHECK(gauge(metrics, "controller_sink_spool_events", "spooled") == 0);
  CHECK(metrics.counter("controller_sink_events_total", "", {"sink", "result"}).with({"spooled", "dropped"}).value() == 0);
}

TEST_CASE("worker with a spool: during an outage each event reaches the disk as it comes", "[spool]") {
  // Until then it is only in memory, where a kill -9 would lose it. One
  // backoff lasts the whole test, so only an offer can make the worker write.
  TempDir dir;
  FakeScript script;
  script.failing = true;
  MetricsRegistry metrics;
  SinkConfig config = spooled_config(script, dir);
  config.retry.initial = 60s;
  config.retry.max = 60s;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.emit_calls == 1 && gauge(metrics, "controller_sink_spool_events", "spooled") == 1; }));
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 2; i <= 11; ++i) {
    worker.offer(make_event(i));
    REQUIRE(eventually([&] { return gauge(metrics, "controller_sink_spool_events", "spooled") == double(i); }));
  }
  // Written on the offer's wake-up: ten events at the 100 ms absorb
  // interval the worker falls back to would take a second.
  CHECK(std::chrono::steady_clock::now() - start < 500ms);
  CHECK(script.emit_calls == 1);
  CHECK(worker.queued() == 11);
  CHECK(worker.stop(SinkWorker::Clock::now() + 50ms));
}

TEST_CASE("worker with a spool: events undelivered at stop are delivered by the next start, first", "[spool]") {
  TempDir dir;
  {
    FakeScript down;
    down.failing = true;
    MetricsRegistry metrics;
    SinkWorker worker(spooled_config(down, dir), fake_plugin(), metrics);
    worker.start();
    for (uint64_t i = 1; i <= 40; ++i) worker.offer(make_event(i));
    REQUIRE(eventually([&] { return down.emit_calls >= 2; }));
    CHECK(worker.stop(SinkWorker::Clock::now() + 50ms));
    const auto report = worker.take_report(SinkWorker::Clock::now() + std::chrono::hours(1));
    CHECK(report.dropped.empty());  // kept in the spool, not dropped
  }
  FakeScript up;
  MetricsRegistry metrics;
  SinkWorker worker(spooled_config(up, dir), fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(41));
  REQUIRE(eventually([&] { return up.seqs().size() >= 41; }));
  CHECK(up.seqs() == range(1, 41));
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
}

TEST_CASE("worker with a spool: a full spool applies when_full and counts what it drops", "[spool]") {
  TempDir dir;
  FakeScript script;
  script.failing = true;
  MetricsRegistry metrics;
  const uint64_t size = SinkSpool::record_size(*make_event(100));
  SinkConfig config = spooled_config(script, dir, 20 * size);
  config.queue.when_full = WhenFull::drop_newest;
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  for (uint64_t i = 100; i < 130; ++i) worker.offer(make_event(i));
  REQUIRE(eventually([&] {
    return metrics.counter("controller_sink_events_total", "", {"sink", "result"}).with({"spooled", "dropped"}).value() == 10;
  }));
  CHECK(gauge(metrics, "controller_sink_spool_events", "spooled") == 20);
  const auto report = worker.take_report(SinkWorker::Clock::now() + std::chrono::hours(1));
  uint64_t spool_full = 0;
  for (const auto& [reason, n] : report.dropped) spool_full += reason == "spool_full" ? n : 0;
  CHECK(spool_full == 10);
  script.failing = false;
  REQUIRE(eventually([&] { return script.seqs().size() >= 20; }));
  CHECK(script.seqs() == range(100, 119));  // the oldest kept, the newest dropped
}

TEST_CASE("worker: rejected and given-up events go to the dead-letter file with the reason", "[spool]") {
  TempDir dir;
  FakeScript script;
  script.first_results = {ZCTL_SINK_REJECT, ZCTL_SINK_RETRY, ZCTL_SINK_RETRY};
  MetricsRegistry metrics;
  SinkConfig config = spooled_config(script, dir);
  config.spool.dir.clear();
  config.retry.max_attempts = 2;
  config.dead_letter.path = dir.file("dead.jsonl");
  SinkWorker worker(config, fake_plugin(), metrics);
  worker.start();
  worker.offer(make_event(1));
  REQUIRE(eventually([&] { return script.emit_calls == 1; }));
  worker.offer(make_event(2));
  REQUIRE(eventually([&] { return script.emit_calls == 3; }));
  CHECK(worker.stop(SinkWorker::Clock::now() + 1s));
  std::ifstream in(config.dead_letter.path);
  std::string first, second, none;
  REQUIRE(std::getline(in, first));
  REQUIRE(std::getline(in, second));
  CHECK_FALSE(std::getline(in, none));
  CHECK_THAT(first, Catch::StartsWith(R"({"sink":"spooled","result":"rejected","reason":"scripted result 2","attempts":1,"at":")"));
  CHECK_THAT(first, Catch::EndsWith(R"(,"event":{"seq":1,"pad":""}})"));
  CHECK_THAT(second, Catch::Contains(R"("result":"retries_exhausted","reason":"scripted result 1","attempts":2,)"));
  CHECK_THAT(second, Catch::EndsWith(R"(,"event":{"seq":2,"pad":""}})"));
}
