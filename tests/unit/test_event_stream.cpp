#include <catch2/catch.hpp>

#include "admin_server.hpp"
#include "zctl/core/event_stream.hpp"

using namespace zctl;

TEST_CASE("SSE parser handles any split of the byte stream", "[sse]") {
  const std::string stream =
      "retry: 1000\n\n: keepalive\n\nid: 7\nevent: node/started\ndata: {\"seq\":7}\n\n"
      "id: 8\r\ndata: line1\r\ndata: line2\r\n\r\nevent: gap\ndata: {\"from\":1}\n\n";
  for (size_t split = 0; split <= stream.size(); ++split) {
    SseParser parser;
    std::vector<SseMessage> out;
    parser.feed(std::string_view(stream).substr(0, split), out);
    parser.feed(std::string_view(stream).substr(split), out);
    REQUIRE(out.size() == 3);
    CHECK(out[0].id == "7");
    CHECK(out[0].event == "node/started");
    CHECK(out[0].data == "{\"seq\":7}");
    CHECK(out[1].id == "8");
    CHECK(out[1].data == "line1\nline2");
    CHECK(out[2].event == "gap");
  }
}

TEST_CASE("an id line without data dispatches nothing but is remembered", "[sse]") {
  SseParser parser;
  std::vector<SseMessage> out;
  parser.feed("retry: 1000\n\nid: 41\n\n", out);
  CHECK(out.empty());
  CHECK(parser.last_id() == "41");
}

TEST_CASE("event stream query: filters, since, Last-Event-ID wins, errors", "[sse]") {
  auto q = parse_event_stream_query("/v1/events?namespace=cluster&type=state.%2A&type=stray&since=41", "");
  REQUIRE(q.valid);
  CHECK(q.namespaces == std::vector<std::string>{"cluster"});
  CHECK(q.types == std::vector<std::string>{"state.*", "stray"});
  CHECK(q.since == 41u);
  q = parse_event_stream_query("/v1/events?since=41", "99");
  CHECK(q.since == 99u);
  q = parse_event_stream_query("/v1/events", "");
  CHECK_FALSE(q.since);
  q = parse_event_stream_query("/v1/events?since=-1", "");
  CHECK_FALSE(q.valid);
  CHECK(q.error.find("since") != std::string::npos);
  q = parse_event_stream_query("/v1/events?sinse=1", "");
  CHECK_FALSE(q.valid);
  CHECK(q.error.find("unknown query parameter 'sinse'") != std::string::npos);
  q = parse_event_stream_query("/v1/events", "abc");
  CHECK_FALSE(q.valid);
  CHECK(url_decode("a%20b+c%zz") == "a b c%zz");
}

TEST_CASE("watch client builds resumable request targets and rejects bad URLs", "[sse]") {
  EventStreamOptions o;
  o.node_url = "http://127.0.0.1:7000/";
  o.namespaces = {"cluster"};
  o.types = {"state.*"};
  EventStreamClient client(o);
  CHECK(client.request_target(std::nullopt) == "/v1/events?namespace=cluster&type=state.*");
  CHECK(client.request_target(12) == "/v1/events?namespace=cluster&type=state.*&since=12");
  o.node_url = "ftp://x:1";
  CHECK_THROWS_AS(EventStreamClient(o), std::invalid_argument);
  o.node_url = "http://x:1/path";
  CHECK_THROWS_AS(EventStreamClient(o), std::invalid_argument);
}

TEST_CASE("table lines show time, seq, namespace, type and the event's own fields", "[sse]") {
  const std::string json =
      R"({"namespace":"connection","eventType":"stray","event_src_id":"n1","timestamp":"2025-01-10T13:54:48.151522421-05:00","seq":9,"remoteAddr":"10.0.0.9:5","graceMs":30000,"protocolVersion":null})";
  const std::string line = format_event_line(json, false);
  CHECK(line.rfind("13:54:48.151 #9", 0) == 0);
  CHECK(line.find("connection") != std::string::npos);
  CHECK(line.find("stray") != std::string::npos);
  CHECK(line.find("remoteAddr=10.0.0.9:5 graceMs=30000 protocolVersion=null") != std::string::npos);
  CHECK(line.find("node=n1") != std::string::npos);
  CHECK(line.find('\033') == std::string::npos);
  CHECK(format_event_line(json, true).find("\033[33m") != std::string::npos);
  CHECK(format_event_line("not json", false) == "not json");
}
