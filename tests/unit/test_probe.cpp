#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "mesh_protocol.hpp"
#include "zctl/core/probe.hpp"

using namespace zctl;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

ProbeDuration ms(int64_t n) { return std::chrono::duration_cast<ProbeDuration>(milliseconds(n)); }

std::vector<ProbeDuration> ms_list(int64_t from, int64_t to) {
  std::vector<ProbeDuration> values;
  for (int64_t i = from; i <= to; ++i) values.push_back(ms(i));
  return values;
}

ProbeOptions options_for(ProbeMode mode, size_t connections = 3) {
  ProbeOptions o;
  o.target = "127.0.0.1:6262";
  o.mode = mode;
  o.connections = connections;
  return validate_probe_options(o);
}

// A connection the node closed `close_ms` after connect, having sent `labels`.
ConnectionResult closed_after(size_t index, int64_t close_ms, std::vector<std::string> labels = {},
                              std::string expected = "") {
  ConnectionResult r;
  r.index = index;
  r.connected = true;
  r.closed_by_node = true;
  r.close_reason = "eof";
  r.time_to_close = ms(close_ms);
  r.replies.labels = std::move(labels);
  r.expected_reply = std::move(expected);
  return r;
}

ConnectionResult joined(size_t index, int64_t latency_ms, std::vector<std::string> labels) {
  ConnectionResult r;
  r.index = index;
  r.connected = true;
  r.latency = ms(latency_ms);
  r.replies.labels = std::move(labels);
  r.expected_reply = "accepted";
  return r;
}

bool any_failure_contains(const ProbeReport& report, const std::string& text) {
  for (const auto& f : report.failures) {
    if (f.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

// ---- percentiles ------------------------------------------------------------------

TEST_CASE("percentile is nearest rank", "[probe]") {
  const auto hundred = ms_list(1, 100);
  CHECK(percentile(hundred, 50) == ms(50));
  CHECK(percentile(hundred, 99) == ms(99));
  CHECK(percentile(hundred, 100) == ms(100));
  CHECK(percentile(hundred, 1) == ms(1));
  CHECK(percentile(hundred, 0.5) == ms(1));

  const auto thousand = ms_list(1, 1000);
  CHECK(percentile(thousand, 50) == ms(500));
  CHECK(percentile(thousand, 99) == ms(990));

  // Few values: p99 is the largest, p50 the lower middle.
  const std::vector<ProbeDuration> two = {ms(10), ms(20)};
  CHECK(percentile(two, 50) == ms(10));
  CHECK(percentile(two, 99) == ms(20));
  const std::vector<ProbeDuration> three = {ms(10), ms(20), ms(30)};
  CHECK(percentile(three, 50) == ms(20));
  const std::vector<ProbeDuration> one = {ms(7)};
  CHECK(percentile(one, 50) == ms(7));
  CHECK(percentile(one, 99) == ms(7));

  CHECK_THROWS_AS(percentile({}, 50), std::invalid_argument);
}

TEST_CASE("duration summaries sort their input", "[probe]") {
  const DurationSummary s = summarize_durations({ms(300), ms(100), ms(500), ms(200), ms(400)});
  CHECK(s.count == 5);
  CHECK(s.min == ms(100));
  CHECK(s.p50 == ms(300));
  CHECK(s.p99 == ms(500));
  CHECK(s.max == ms(500));

  const DurationSummary empty = summarize_durations({});
  CHECK(empty.count == 0);
  CHECK(empty.max == ProbeDuration(0));
}

// ---- modes and options ----------------------------------------------------------------

TEST_CASE("probe modes: names round-trip and each has its kind", "[probe]") {
  REQUIRE(all_probe_modes().size() == 9);
  for (ProbeMode mode : all_probe_modes()) CHECK(parse_probe_mode(to_string(mode)) == mode);
  CHECK(to_string(ProbeMode::bad_magic) == "bad-magic");
  CHECK(to_string(ProbeMode::bad_version) == "bad-version");
  CHECK_FALSE(parse_probe_mode("bad_magic"));
  CHECK_FALSE(parse_probe_mode(""));
  CHECK(kind_of(ProbeMode::idle) == ProbeKind::stalling);
  CHECK(kind_of(ProbeMode::tls) == ProbeKind::stalling);
  CHECK(kind_of(ProbeMode::hello) == ProbeKind::stalling);
  CHECK(kind_of(ProbeMode::partial) == ProbeKind::stalling);
  CHECK(kind_of(ProbeMode::bad_magic) == ProbeKind::immediate);
  CHECK(kind_of(ProbeMode::bad_version) == ProbeKind::immediate);
  CHECK(kind_of(ProbeMode::oversize) == ProbeKind::immediate);
  CHECK(kind_of(ProbeMode::garbage) == ProbeKind::immediate);
  CHECK(kind_of(ProbeMode::join) == ProbeKind::join);
}

TEST_CASE("probe options: defaults filled in, impossible values refused", "[probe]") {
  ProbeOptions o;
  o.target = "127.0.0.1:6262";
  const ProbeOptions d = validate_probe_options(o);
  CHECK(d.connections == 1);
  CHECK(d.concurrency == 1);
  CHECK(d.expect_grace == seconds(30));
  CHECK(d.tolerance == seconds(1));
  REQUIRE(d.timeout);
  CHECK(*d.timeout == seconds(36));
  CHECK_FALSE(d.tls);

  o.connections = 1000;
  CHECK(validate_probe_options(o).concurrency == 256);
  o.concurrency = 10;
  CHECK(validate_probe_options(o).concurrency == 10);
  o.connections = 4;
  CHECK(validate_probe_options(o).concurrency == 4);  // never more than the connections
  ProbeOptions j = o;
  j.mode = ProbeMode::join;
  j.concurrency = 0;
  CHECK(validate_probe_options(j).concurrency == 1);  // one joined session per node id
  j.concurrency = 3;
  CHECK(validate_probe_options(j).concurrency == 3);

  o.expect_grace = seconds(5);
  o.tolerance = milliseconds(500);
  CHECK(*validate_probe_options(o).timeout == milliseconds(10500));

  ProbeOptions t = o;
  t.mode = ProbeMode::tls;
  CHECK(validate_probe_options(t).tls);

  const auto refuses = [](ProbeOptions bad, const std::string& text) {
    CHECK_THROWS_WITH(validate_probe_options(bad), Catch::Contains(text));
  };
  ProbeOptions bad = o;
  bad.target = "127.0.0.1";
  refuses(bad, "is not HOST:PORT");
  bad.target = "::1:6262";
  refuses(bad, "brackets");
  bad.target = "127.0.0.1:0";
  refuses(bad, "from 1 to 65535");
  bad = o;
  bad.connections = 0;
  refuses(bad, "--connections must be 1 to 1000000");
  bad.connections = 1'000'001;
  refuses(bad, "--connections must be 1 to 1000000");
  bad = o;
  bad.node_id = "has space";
  refuses(bad, "--node-id");
  bad = o;
  bad.cluster_id = "";
  refuses(bad, "--cluster-id");
  bad = o;
  bad.raft_addr = "a b:1";
  refuses(bad, "--raft-addr");
  bad = o;
  bad.ca_file = "ca.pem";
  refuses(bad, "need --tls");
  bad.tls = true;
  bad.cert_file = "probe.pem";
  refuses(bad, "--cert-file and --key-file go together");
  bad = o;
  bad.timeout = seconds(3);  // ends before the 5s grace
  refuses(bad, "ends before the close window");
  bad.mode = ProbeMode::bad_magic;  // only the tolerance matters here
  CHECK_NOTHROW(validate_probe_options(bad));
  bad.mode = ProbeMode::join;
  bad.timeout = milliseconds(100);
  CHECK_NOTHROW(validate_probe_options(bad));
}

// ---- what each mode sends and expects ------------------------------------------------------

TEST_CASE("probe payloads are the streams each mode describes", "[probe]") {
  ProbeOptions o = options_for(ProbeMode::hello);
  o.node_id = "ctrl2";
  o.cluster_id = "prod";
  // The hello of zctl-protocol(7)'s example, byte for byte.
  const std::string hello(
      "ZCTL\x01\x01\x00\x00\x00\x00\x00\x0f\x01\x01\x00\x05"
      "ctrl2\x00\x04prod",
      27);
  CHECK(probe_payload(o, 0) == hello);
  o.mode = ProbeMode::join;
  CHECK(probe_payload(o, 0) == hello);

  o.mode = ProbeMode::idle;
  CHECK(probe_payload(o, 0).empty());
  o.mode = ProbeMode::tls;
  CHECK(probe_payload(o, 0).empty());

  o.mode = ProbeMode::partial;
  CHECK(probe_payload(o, 0) == hello.substr(0, 13));

  o.mode = ProbeMode::bad_magic;
  const std::string bad_magic = probe_payload(o, 0);
  CHECK(bad_magic.substr(0, 4) == "ZCTX");
  CHECK(bad_magic.substr(4) == hello.substr(4));

  o.mode = ProbeMode::bad_version;
  const std::string bad_version = probe_payload(o, 0);
  REQUIRE(bad_version.size() == 27);
  CHECK(bad_version.substr(0, 4) == "ZCTL");
  CHECK(bad_version[4] == 2);   // header version
  CHECK(bad_version[12] == 2);  // min_version
  CHECK(bad_version[13] == 2);  // max_version

  o.mode = ProbeMode::oversize;
  CHECK(probe_payload(o, 0) == std::string("ZCTL\x01\x01\x00\x00\x7f\xff\xff\xf0", 12));

  o.mode = ProbeMode::garbage;
  const std::string g0 = probe_payload(o, 0);
  CHECK(g0.size() == 64);
  CHECK(probe_payload(o, 0) == g0);  // deterministic
  CHECK(probe_payload(o, 1) != g0);  // one stream per connection
  o.seed = 2;
  CHECK(probe_payload(o, 0) == probe_payload(options_for(ProbeMode::garbage), 1));  // seed + index
}

TEST_CASE("expected replies are what the node's parser answers to each stream", "[probe]") {
  CHECK(expected_reply(options_for(ProbeMode::idle), 0).empty());
  CHECK(expected_reply(options_for(ProbeMode::tls), 0).empty());
  CHECK(expected_reply(options_for(ProbeMode::partial), 0).empty());
  CHECK(expected_reply(options_for(ProbeMode::hello), 0) == "hello_ack");
  CHECK(expected_reply(options_for(ProbeMode::join), 0) == "accepted");
  CHECK(expected_reply(options_for(ProbeMode::bad_magic), 0) == "versions");
  CHECK(expected_reply(options_for(ProbeMode::bad_version), 0) == "versions");
  CHECK(expected_reply(options_for(ProbeMode::oversize), 0) == "rejected:frame_too_large");

  ProbeOptions g = options_for(ProbeMode::garbage);
  size_t versions = 0;
  for (size_t i = 0; i < 200; ++i) {
    const std::string bytes = probe_payload(g, i);
    const std::string expected = expected_reply(g, i);
    if (bytes[0] != 'Z') {
      CHECK(expected == "versions");
      ++versions;
    }
  }
  CHECK(versions > 190);
}

// ---- reading the node's replies ------------------------------------------------------------

TEST_CASE("node replies are classified by type and reason", "[probe]") {
  // The versions reply of zctl-protocol(7).
  const std::string versions("ZCTL\x01\x06\x00\x00\x00\x00\x00\x02\x01\x01", 14);
  NodeReplies r = classify_replies(versions);
  CHECK(r.labels == std::vector<std::string>{"versions"});
  CHECK(r.versions == std::vector<uint8_t>{1});
  CHECK(r.invalid.empty());

  const std::string too_large =
      mesh::encode(mesh::Rejected{"frame_too_large", "offset 8: a frame of 2147483644 bytes exceeds the limit"});
  r = classify_replies(too_large);
  CHECK(r.labels == std::vector<std::string>{"rejected:frame_too_large"});
  CHECK(r.detail == "offset 8: a frame of 2147483644 bytes exceeds the limit");

  const std::string join_answer =
      mesh::encode(mesh::HelloAck{1, "ctrl1", "prod"}) +
      mesh::encode(mesh::Accepted{"ctrl1", {{"ctrl1", "10.0.0.1:6262", "10.0.0.1:6263", true}}});
  r = classify_replies(join_answer);
  CHECK(r.labels == std::vector<std::string>{"hello_ack", "accepted"});

  r = classify_replies(mesh::encode(mesh::Redirect{"ctrl1", "10.0.0.1:6262"}));
  CHECK(r.labels == std::vector<std::string>{"redirect"});
  CHECK(r.detail == "leader ctrl1 at 10.0.0.1:6262");

  r = classify_replies("HTTP/1.1 400 Bad Request\r\n\r\n");
  CHECK(r.labels == std::vector<std::string>{"invalid"});
  CHECK_THAT(r.invalid, Catch::StartsWith("bad_magic at offset 0"));

  r = classify_replies(versions.substr(0, 13));  // the node hung up inside a frame
  CHECK(r.labels == std::vector<std::string>{"invalid"});
  CHECK_THAT(r.invalid, Catch::StartsWith("truncated at offset 0"));

  CHECK(classify_replies("").labels.empty());
}

// ---- verdicts ---------------------------------------------------------------------------

TEST_CASE("stalling modes pass only when every close falls in [grace, grace + tolerance]", "[probe]") {
  const ProbeOptions o = options_for(ProbeMode::idle);  // 30s grace, 1s tolerance, 36s timeout

  SECTION("all inside the window, edges included") {
    const ProbeReport r = summarize_probe(o, {closed_after(0, 30000), closed_after(1, 30500), closed_after(2, 31000)});
    CHECK(r.pass);
    CHECK(r.failures.empty());
    CHECK(r.attempted == 3);
    CHECK(r.opened == 3);
    CHECK(r.closed_by_node == 3);
    CHECK(r.early == 0);
    CHECK(r.late == 0);
    CHECK(r.replies.at("none") == 3);
    CHECK(r.close_reasons.at("eof") == 3);
    CHECK(r.times.count == 3);
    CHECK(r.times.min == ms(30000));
    CHECK(r.times.p50 == ms(30500));
    CHECK(r.times.max == ms(31000));
    CHECK_FALSE(r.measures_latency);
    CHECK_FALSE(r.unreachable());
  }
  SECTION("one closed a millisecond early") {
    const ProbeReport r = summarize_probe(o, {closed_after(0, 29999), closed_after(1, 30500), closed_after(2, 30600)});
    CHECK_FALSE(r.pass);
    CHECK(r.early == 1);
    REQUIRE(r.failures.size() == 1);
    CHECK(r.failures[0] ==
          "1 of 3 connections closed by the node too early: the first after 29.999s, before the expected grace "
          "period of 30s");
  }
  SECTION("the node accepted during the connect: a close that early is not too early") {
    // Closed 29.9995s after the connect completed, but the connect took 1ms
    // and the node's clock started somewhere inside it.
    ConnectionResult r0 = closed_after(0, 30000);
    r0.time_to_close = ms(30000) - ProbeDuration(500);
    r0.connect_time = ms(1);
    ConnectionResult r1 = r0;
    r1.index = 1;
    r1.connect_time = ProbeDuration(400);  // this one is early even from the connect's start
    const ProbeReport r = summarize_probe(o, {r0, r1, closed_after(2, 30100)});
    CHECK(r.early == 1);
    CHECK(r.connect_times.count == 2);
    CHECK(r.connect_times.max == ms(1));
    CHECK(r.times.min == ProbeDuration(29'999'500));
  }
  SECTION("one closed late") {
    const ProbeReport r = summarize_probe(o, {closed_after(0, 30000), closed_after(1, 31001), closed_after(2, 30600)});
    CHECK_FALSE(r.pass);
    CHECK(r.late == 1);
    CHECK(any_failure_contains(r, "1 of 3 connections closed by the node too late: the last after 31.001s"));
  }
  SECTION("late after connects that needed a SYN retransmission: the failure says the backlog was full") {
    ConnectionResult slow = closed_after(1, 32000);
    slow.connect_time = ms(1003);
    ConnectionResult quick = closed_after(2, 30600);
    quick.connect_time = ms(1);
    const ProbeReport r = summarize_probe(o, {closed_after(0, 30000), slow, quick});
    CHECK(r.late == 1);
    CHECK(any_failure_contains(r, "1 of 3 connects took 1s or more (a SYN retransmitted): the node's listen backlog"));
    const ProbeReport fast = summarize_probe(o, {closed_after(0, 30000), closed_after(1, 32000), quick});
    CHECK_FALSE(any_failure_contains(fast, "listen backlog"));
  }
  SECTION("one never closed") {
    ConnectionResult open;
    open.index = 2;
    open.connected = true;
    open.timed_out = true;
    const ProbeReport r = summarize_probe(o, {closed_after(0, 30000), closed_after(1, 30100), open});
    CHECK_FALSE(r.pass);
    CHECK(r.timed_out == 1);
    CHECK(r.closed_by_node == 2);
    CHECK(r.times.count == 2);
    CHECK(any_failure_contains(r, "1 of 3 connections still open at the timeout of 36s"));
  }
  SECTION("a TLS alert that closed early is named") {
    ConnectionResult alert = closed_after(0, 3, {});
    alert.close_reason = "tlsv13 alert certificate required";
    const ProbeReport r = summarize_probe(o, {alert, closed_after(1, 30100), closed_after(2, 30100)});
    CHECK(any_failure_contains(r, "(tlsv13 alert certificate required)"));
  }
  SECTION("hello mode also needs the hello_ack") {
    const ProbeOptions h = options_for(ProbeMode::hello, 2);
    const ProbeReport ok = summarize_probe(
        h, {closed_after(0, 30100, {"hello_ack"}, "hello_ack"), closed_after(1, 30100, {"hello_ack"}, "hello_ack")});
    CHECK(ok.pass);
    CHECK(ok.replies.at("hello_ack") == 2);
    const ProbeReport missing = summarize_probe(
        h, {closed_after(0, 30100, {"hello_ack"}, "hello_ack"), closed_after(1, 30100, {}, "hello_ack")});
    CHECK_FALSE(missing.pass);
    CHECK(missing.failures ==
          std::vector<std::string>{"1 of 2 connections did not get the expected reply hello_ack (got none 1)"});
  }
}

TEST_CASE("immediate modes pass on a quick close with the expected reply", "[probe]") {
  const ProbeOptions o = options_for(ProbeMode::bad_magic, 2);
  CHECK(summarize_probe(o,
                        {closed_after(0, 2, {"versions"}, "versions"), closed_after(1, 1000, {"versions"}, "versions")})
            .pass);

  const ProbeReport slow =
      summarize_probe(o, {closed_after(0, 2, {"versions"}, "versions"), closed_after(1, 30000, {}, "versions")});
  CHECK_FALSE(slow.pass);
  CHECK(slow.late == 1);
  CHECK(slow.early == 0);  // expect_grace does not apply
  CHECK(
      any_failure_contains(slow, "1 of 2 connections closed by the node too late: the last after 30s, expected by 1s"));
  CHECK(any_failure_contains(slow, "1 of 2 connections did not get the expected reply versions"));
  CHECK(slow.replies.at("versions") == 1);
  CHECK(slow.replies.at("none") == 1);

  const ProbeOptions big = options_for(ProbeMode::oversize, 1);
  const ProbeReport wrong = summarize_probe(big, {closed_after(0, 3, {"versions"}, "rejected:frame_too_large")});
  CHECK_FALSE(wrong.pass);
  CHECK(wrong.failures ==
        std::vector<std::string>{
            "1 of 1 connection did not get the expected reply rejected:frame_too_large (got versions 1)"});
}

TEST_CASE("join passes only when every join is accepted; times are latencies", "[probe]") {
  const ProbeOptions o = options_for(ProbeMode::join, 3);
  const ProbeReport ok =
      summarize_probe(o, {joined(0, 4, {"hello_ack", "accepted"}), joined(1, 6, {"hello_ack", "accepted"}),
                          joined(2, 5, {"hello_ack", "accepted"})});
  CHECK(ok.pass);
  CHECK(ok.measures_latency);
  CHECK(ok.times.count == 3);
  CHECK(ok.times.min == ms(4));
  CHECK(ok.times.p50 == ms(5));
  CHECK(ok.times.max == ms(6));

  ConnectionResult silent;
  silent.index = 2;
  silent.connected = true;
  silent.timed_out = true;
  silent.replies.labels = {"hello_ack"};
  silent.expected_reply = "accepted";
  const ProbeReport bad = summarize_probe(
      o, {joined(0, 4, {"hello_ack", "accepted"}), joined(1, 6, {"hello_ack", "rejected:bad_token"}), silent});
  CHECK_FALSE(bad.pass);
  CHECK(bad.times.count == 2);
  CHECK(bad.replies.at("rejected:bad_token") == 1);
  CHECK(bad.replies.at("hello_ack") == 3);
  CHECK(any_failure_contains(bad, "2 of 3 joins not accepted: no answer 1, rejected:bad_token 1"));
}

TEST_CASE("connections that could not be opened fail the verdict; none opened is unreachable", "[probe]") {
  const ProbeOptions o = options_for(ProbeMode::idle, 2);
  ConnectionResult refused;
  refused.index = 0;
  refused.refused = true;
  refused.error = "connect: Connection refused";
  ConnectionResult refused2 = refused;
  refused2.index = 1;

  const ProbeReport none = summarize_probe(o, {refused, refused2});
  CHECK_FALSE(none.pass);
  CHECK(none.unreachable());
  CHECK(none.refused == 2);
  CHECK(none.connect_failed == 2);
  CHECK(none.replies.empty());
  CHECK(none.errors.at("connect: Connection refused") == 2);
  CHECK(any_failure_contains(none, "2 of 2 connections could not be opened (connect: Connection refused)"));

  const ProbeReport some = summarize_probe(o, {refused, closed_after(1, 30100)});
  CHECK_FALSE(some.pass);
  CHECK_FALSE(some.unreachable());
  CHECK(some.opened == 1);
}

TEST_CASE("the JSON report carries the counts, times and verdict", "[probe]") {
  const ProbeOptions o = options_for(ProbeMode::bad_version, 2);
  ConnectionResult a = closed_after(0, 2, {"versions"}, "versions");
  a.replies.versions = {1};
  ConnectionResult b = closed_after(1, 4, {"versions"}, "versions");
  b.replies.versions = {1};
  const ProbeReport r = summarize_probe(o, {a, b});
  rapidjson::Document doc;
  const std::string json = probe_report_json(r);
  REQUIRE_FALSE(doc.Parse(json.c_str()).HasParseError());
  CHECK(std::string(doc["mode"].GetString()) == "bad-version");
  CHECK(std::string(doc["verdict"].GetString()) == "pass");
  CHECK(doc["connections"].GetUint() == 2);
  CHECK(doc["opened"].GetUint() == 2);
  CHECK(doc["closedByNode"].GetUint() == 2);
  CHECK(doc["replies"]["versions"].GetUint() == 2);
  CHECK(doc["versions"].Size() == 1);
  CHECK(doc["versions"][0].GetUint() == 1);
  CHECK(doc["window"]["fromMs"].GetUint() == 0);
  CHECK(doc["window"]["toMs"].GetUint() == 1000);
  CHECK(std::string(doc["measured"].GetString()) == "timeToClose");
  CHECK(doc["times"]["count"].GetUint() == 2);
  CHECK(doc["times"]["minMs"].GetDouble() == 2.0);
  CHECK(doc["times"]["maxMs"].GetDouble() == 4.0);
  CHECK(doc["connectTimes"]["count"].GetUint() == 0);
  CHECK(doc["failures"].Size() == 0);
  CHECK(doc["error"].IsNull());
}

TEST_CASE("probe durations read well", "[probe]") {
  CHECK(format_probe_duration(ProbeDuration(850)) == "850us");
  CHECK(format_probe_duration(ProbeDuration(2500)) == "2.5ms");
  CHECK(format_probe_duration(milliseconds(300)) == "300ms");
  CHECK(format_probe_duration(milliseconds(1500)) == "1.5s");
  CHECK(format_probe_duration(ProbeDuration(12345)) == "12.3ms");
  CHECK(format_probe_duration(seconds(30)) == "30s");
  CHECK(format_probe_duration(ProbeDuration(30'002'100)) == "30.002s");
}

// ---- against a node on loopback ----------------------------------------------------------

namespace {

// A node on 127.0.0.1 that speaks the server side of the handshake with the
// real FrameParser and HandshakeMachine, closes a connection `grace` after
// accept, and accepts every join. One thread per connection.
class LoopbackNode {
 public:
  explicit LoopbackNode(milliseconds grace) : grace_(grace) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 64) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~LoopbackNode() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    for (auto& t : sessions_) t.join();
    ::close(fd_);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) continue;
      sessions_.emplace_back([this, client] { session(client); });
    }
  }

  void session(int client) {
    const auto deadline = std::chrono::steady_clock::now() + grace_;
    mesh::FrameParser parser;
    mesh::HandshakeMachine machine("node1", "zctl");
    const auto send = [client](const mesh::Message& m, uint8_t version = 1) {
      const std::string bytes = mesh::encode(m, version);
      (void)!::send(client, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    };
    char buffer[4096];
    for (;;) {
      // Rounded up: poll() waits whole milliseconds, and the node must not close early.
      const auto left = std::chrono::ceil<milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{client, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) break;  // stray: close
      const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      std::string_view in(buffer, static_cast<size_t>(n));
      bool close = false;
      while (!in.empty() && !close) {
        mesh::ParseResult r = parser.feed(in);
        in.remove_prefix(r.consumed);
        if (r.failed()) {
          if (auto reply = mesh::error_reply(r.error)) send(*reply);
          close = true;
        } else if (r.has_frame()) {
          const mesh::HandshakeOutcome outcome = machine.on_frame(r.frame);
          if (outcome.kind == mesh::HandshakeOutcome::Kind::decide) {
            send(machine.accept(mesh::Accepted{"node1", {}}));
          } else if (outcome.reply) {
            send(*outcome.reply);
          }
          close = outcome.kind == mesh::HandshakeOutcome::Kind::rejected ||
                  outcome.kind == mesh::HandshakeOutcome::Kind::protocol_error;
        } else {
          break;
        }
      }
      if (close) break;
    }
    ::close(client);
  }

  milliseconds grace_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> sessions_;  // touched by the acceptor thread only, joined after it
};

}  // namespace

TEST_CASE("run_probe against a loopback node: grace closes, immediate refusals, joins", "[probe][socket]") {
  LoopbackNode node(milliseconds(300));
  ProbeOptions o;
  o.target = node.target();
  o.connections = 4;
  o.concurrency = 2;
  // Generous tolerances: the suite runs next to other tests on busy machines.
  o.expect_grace = milliseconds(300);
  o.tolerance = seconds(3);

  SECTION("partial stalls until the grace period") {
    o.mode = ProbeMode::partial;
    size_t progress_calls = 0;
    const ProbeReport r = run_probe(o, [&](const ProbeProgress&) { ++progress_calls; });
    INFO(probe_report_json(r));
    CHECK(r.pass);
    CHECK(r.opened == 4);
    CHECK(r.closed_by_node == 4);
    CHECK(r.early == 0);
    CHECK(r.late == 0);
    CHECK(r.times.max >= milliseconds(290));  // closed at the grace period, not at once
    CHECK(r.replies.at("none") == 4);
    CHECK(progress_calls >= 2);
  }
  SECTION("oversize is refused at once") {
    o.mode = ProbeMode::oversize;
    const ProbeReport r = run_probe(o);
    INFO(probe_report_json(r));
    CHECK(r.pass);
    CHECK(r.replies.at("rejected:frame_too_large") == 4);
    CHECK(r.closed_by_node == 4);
  }
  SECTION("bad-version gets the versions list") {
    o.mode = ProbeMode::bad_version;
    const ProbeReport r = run_probe(o);
    INFO(probe_report_json(r));
    CHECK(r.pass);
    CHECK(r.versions == std::vector<uint8_t>{1});
  }
  SECTION("join is accepted") {
    o.mode = ProbeMode::join;
    const ProbeReport r = run_probe(o);
    INFO(probe_report_json(r));
    CHECK(r.pass);
    CHECK(r.replies.at("accepted") == 4);
    CHECK(r.times.count == 4);
  }
  SECTION("a hello for another cluster is closed too early") {
    o.mode = ProbeMode::hello;
    o.cluster_id = "other";
    o.expect_grace = seconds(3);  // the node closes at its 300ms grace period at the latest
    const ProbeReport r = run_probe(o);
    CHECK_FALSE(r.pass);
    CHECK(r.early == 4);
    CHECK(r.replies.at("rejected:wrong_cluster") == 4);
  }
}

TEST_CASE("run_probe reports a port nobody listens on as unreachable", "[probe][socket]") {
  // Bind a port, then free it: connecting to it is refused.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);

  ProbeOptions o;
  o.target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  o.connections = 3;
  const ProbeReport r = run_probe(o);
  CHECK(r.unreachable());
  CHECK_FALSE(r.pass);
  CHECK(r.refused == 3);
  CHECK(r.opened == 0);
}
