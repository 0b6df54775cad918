#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "mesh_protocol.hpp"

using namespace zctl::mesh;

namespace {

// Frames are built by hand here, independently of encode(), so the tests
// check the wire layout of man/zctl-protocol.7 and not just encode/decode
// symmetry.
std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)) + u16(static_cast<uint16_t>(v)); }
std::string u64(uint64_t v) { return u32(static_cast<uint32_t>(v >> 32)) + u32(static_cast<uint32_t>(v)); }
std::string str(std::string_view s) { return u16(static_cast<uint16_t>(s.size())) + std::string(s); }
std::string byte(uint8_t b) { return std::string(1, static_cast<char>(b)); }

std::string header(uint8_t type, uint32_t length, uint8_t version = 1, uint16_t flags = 0) {
  return "ZCTL" + byte(version) + byte(type) + u16(flags) + u32(length);
}
std::string frame(uint8_t type, const std::string& body, uint8_t version = 1) {
  return header(type, static_cast<uint32_t>(body.size()), version) + body;
}
std::string hello_body(std::string_view node = "ctrl2", std::string_view cluster = "prod", uint8_t min = 1,
                       uint8_t max = 1) {
  return byte(min) + byte(max) + str(node) + str(cluster);
}

// Everything a parser reports for `bytes` fed in chunks of `chunk` bytes
// (0: all at once), then finish(). Frames come back as their messages,
// errors as FrameError.
struct Events {
  std::vector<Frame> frames;
  std::optional<FrameError> error;
  uint64_t consumed = 0;
};

Events parse(std::string_view bytes, size_t chunk = 0, uint32_t max = kDefaultMaxFrameBytes, bool finish = true) {
  FrameParser parser(max);
  Events events;
  size_t pos = 0;
  while (pos < bytes.size() && !events.error) {
    const size_t n = chunk == 0 ? bytes.size() - pos : std::min(chunk, bytes.size() - pos);
    std::string_view in = bytes.substr(pos, n);
    pos += n;
    for (;;) {
      ParseResult r = parser.feed(in);
      REQUIRE(r.consumed <= in.size());
      in.remove_prefix(r.consumed);
      if (r.has_frame()) {
        events.frames.push_back(std::move(r.frame));
        continue;
      }
      if (r.failed()) events.error = r.error;
      if (r.need_more()) REQUIRE(in.empty());
      break;
    }
  }
  if (finish && !events.error) events.error = parser.finish();
  events.consumed = parser.bytes_consumed();
  return events;
}

FrameError parse_error(std::string_view bytes, uint32_t max = kDefaultMaxFrameBytes) {
  Events events = parse(bytes, 0, max);
  REQUIRE(events.error.has_value());
  return *events.error;
}

Message round_trip(const Message& message) {
  const std::string bytes = encode(message);
  Events events = parse(bytes);
  REQUIRE_FALSE(events.error.has_value());
  REQUIRE(events.frames.size() == 1);
  CHECK(events.frames[0].version == 1);
  CHECK(events.frames[0].offset == 0);
  CHECK(events.consumed == bytes.size());
  return events.frames[0].message;
}

Frame frame_of(Message message, uint64_t offset = 0, uint8_t version = 1) {
  return {version, offset, std::move(message)};
}

}  // namespace

TEST_CASE("mesh: error reasons are the snake_case names of the protocol_error event", "[mesh]") {
  CHECK(to_string(ProtocolError::bad_magic) == "bad_magic");
  CHECK(to_string(ProtocolError::unsupported_version) == "unsupported_version");
  CHECK(to_string(ProtocolError::frame_too_large) == "frame_too_large");
  CHECK(to_string(ProtocolError::truncated) == "truncated");
  CHECK(to_string(ProtocolError::malformed_payload) == "malformed_payload");
  CHECK(to_string(ProtocolError::unexpected_message) == "unexpected_message");
  CHECK(to_string(MessageType::heartbeat_ack) == "heartbeat_ack");
  CHECK(type_of(Redirect{}) == MessageType::redirect);
  CHECK(type_of(Hello{}) == MessageType::hello);
}

TEST_CASE("mesh: every message type survives encode and parse", "[mesh]") {
  const std::vector<Message> messages = {
      Hello{1, 3, "ctrl-2.eu_west", "prod"},
      HelloAck{1, "ctrl1", "prod"},
      Join{"10.0.0.2:6263", "s3cr3t token with spaces \xc3\xa9"},
      Join{"[::1]:6263", ""},
      Accepted{"ctrl1",
               {{"ctrl1", "10.0.0.1:6262", "10.0.0.1:6263", true}, {"ctrl2", "10.0.0.2:6262", "10.0.0.2:6263", false}}},
      Accepted{"ctrl1", {}},
      Rejected{"bad_token", "the join token does not match \xe2\x9c\x97"},
      Rejected{"not_member", ""},
      Versions{{1}},
      Versions{{1, 2, 7, 255}},
      Heartbeat{UINT64_MAX, 0},
      Heartbeat{42, 7},
      HeartbeatAck{UINT64_MAX},
      Redirect{"ctrl3", "10.0.0.3:6262"},
  };
  for (const Message& message : messages) {
    INFO(to_string(type_of(message)));
    CHECK(round_trip(message) == message);
  }

  // Field limits are inclusive.
  Accepted big{std::string(64, 'a'), {}};
  for (size_t i = 0; i < kMaxMembers; ++i) {
    big.members.push_back({"n" + std::to_string(i), std::string(255, 'm'), "r:1", i % 2 == 0});
  }
  CHECK(encode(big).size() > kDefaultMaxFrameBytes);  // the largest accepted needs a raised limit
  Events events = parse(encode(big), 0, 1u << 20);
  REQUIRE(events.frames.size() == 1);
  CHECK(events.frames[0].message == Message(big));
  CHECK(round_trip(Join{std::string(255, 'x'), std::string(1024, 't')}) ==
        Message(Join{std::string(255, 'x'), std::string(1024, 't')}));
  CHECK(round_trip(Rejected{std::string(64, 'r'), std::string(1024, 'd')}) ==
        Message(Rejected{std::string(64, 'r'), std::string(1024, 'd')}));
}

TEST_CASE("mesh: the wire layout is the one in zctl-protocol(7)", "[mesh]") {
  // The man page's worked examples, byte for byte.
  CHECK(encode(Hello{1, 1, "ctrl2", "prod"}) == frame(1, hello_body("ctrl2", "prod")));
  CHECK(encode(Hello{1, 1, "ctrl2", "prod"}) == std::string("\x5A\x43\x54\x4C\x01\x01\x00\x00\x00\x00\x00\x0F"
                                                            "\x01\x01\x00\x05"
                                                            "ctrl2"
                                                            "\x00\x04"
                                                            "prod",
                                                            27));
  CHECK(encode(Versions{{1}}) == std::string("ZCTL\x01\x06\x00\x00\x00\x00\x00\x02\x01\x01", 14));
  CHECK(encode(Heartbeat{3, 258}) == frame(7, u64(3) + u64(258)));
  CHECK(encode(Accepted{"a", {{"b", "c:1", "d:2", true}}}) ==
        frame(4, str("a") + u16(1) + str("b") + str("c:1") + str("d:2") + byte(1)));
  // The version byte is written as given, so the probe can send an unsupported one.
  CHECK(encode(HeartbeatAck{1}, 9).substr(0, 6) == "ZCTL" + byte(9) + byte(8));
}

TEST_CASE("mesh: encode refuses messages a peer would reject", "[mesh]") {
  CHECK_THROWS_WITH(encode(Hello{1, 1, "ctrl 2", "prod"}), Catch::Contains("hello.node_id") && Catch::Contains("0x20"));
  CHECK_THROWS_WITH(encode(Hello{2, 1, "a", "b"}), Catch::Contains("hello.min_version"));
  CHECK_THROWS_AS(encode(Hello{0, 1, "a", "b"}), std::invalid_argument);
  CHECK_THROWS_AS(encode(HelloAck{1, "", "b"}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Join{"", ""}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Join{"a b:1", ""}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Join{"a:1", std::string(1025, 't')}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Join{"a:1", "\xff"}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Rejected{"Bad", ""}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Versions{{}}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Versions{{2, 1}}), std::invalid_argument);
  CHECK_THROWS_AS(encode(Accepted{"a", std::vector<Member>(kMaxMembers + 1, Member{"m", "a:1", "a:2", true})}),
                  std::invalid_argument);
}

TEST_CASE("mesh: a wrong magic byte is refused the moment it arrives", "[mesh]") {
  for (size_t at : {0u, 2u, 3u}) {
    std::string bytes = "ZCTL";
    bytes[at] = 'X';
    bytes.resize(at + 1);  // nothing after the wrong byte is needed
    FrameParser parser;
    ParseResult r = parser.feed(bytes);
    REQUIRE(r.failed());
    CHECK(r.error.error == ProtocolError::bad_magic);
    CHECK(r.error.offset == at);
    CHECK(r.consumed == at + 1);
    CHECK_FALSE(r.error.peer_version.has_value());
    CHECK(parser.bytes_consumed() == at + 1);
  }
  // HTTP, TLS or garbage on the mesh port.
  CHECK(parse_error("GET / HTTP/1.1\r\n").offset == 0);
  CHECK(parse_error("\x16\x03\x01").error == ProtocolError::bad_magic);
  // In a later frame the offset is absolute in the stream.
  const std::string first = frame(8, u64(1));
  const FrameError e = parse_error(first + "ZCTX");
  CHECK(e.error == ProtocolError::bad_magic);
  CHECK(e.offset == first.size() + 3);
  CHECK(e.detail == "byte 0x58 where the magic \"ZCTL\" has 0x4c");
  // The reply lists the versions this node speaks.
  CHECK(error_reply(e) == std::optional<Message>(Versions{{1}}));
}

TEST_CASE("mesh: an unsupported version is refused at byte 4", "[mesh]") {
  for (uint8_t version : {uint8_t{0}, uint8_t{2}, uint8_t{255}}) {
    FrameParser parser;
    ParseResult r = parser.feed("ZCTL" + byte(version));
    REQUIRE(r.failed());
    CHECK(r.error.error == ProtocolError::unsupported_version);
    CHECK(r.error.offset == 4);
    CHECK(r.error.peer_version == version);
    CHECK(parser.peer_version() == version);
    CHECK(error_reply(r.error) == std::optional<Message>(Versions{{1}}));
  }
  // The encoded reply a client gets: a version-1 versions frame.
  CHECK(encode(*error_reply(parse_error("ZCTL\x02"))) ==
        std::string("ZCTL\x01\x06\x00\x00\x00\x00\x00\x02\x01\x01", 14));
}

TEST_CASE("mesh: header fields are checked as soon as they are complete", "[mesh]") {
  SECTION("unknown message type, at the type byte") {
    for (uint8_t type : {uint8_t{0}, uint8_t{10}, uint8_t{200}}) {
      FrameParser parser;
      ParseResult r = parser.feed("ZCTL\x01" + byte(type));
      REQUIRE(r.failed());
      CHECK(r.error.error == ProtocolError::malformed_payload);
      CHECK(r.error.offset == 5);
      CHECK(r.error.peer_version == 1);
    }
  }
  SECTION("flags other than 0") {
    FrameParser parser;
    CHECK(parser.feed(std::string("ZCTL\x01\x07\x00", 7)).need_more());
    ParseResult r = parser.feed("\x01");
    REQUIRE(r.failed());
    CHECK(r.error.error == ProtocolError::malformed_payload);
    CHECK(r.error.offset == 6);
    CHECK(parse_error(header(7, 16, 1, 0x8000) + u64(1) + u64(2)).offset == 6);
  }
  SECTION("length over the limit, before any body byte") {
    // The limit counts the whole frame: 12 header bytes + the body.
    FrameParser parser(100);
    const std::string too_large = header(7, 89);
    CHECK(parser.feed(too_large.substr(0, 11)).need_more());
    ParseResult r = parser.feed(too_large.substr(11));
    REQUIRE(r.failed());
    CHECK(r.error.error == ProtocolError::frame_too_large);
    CHECK(r.error.offset == 8);
    CHECK(r.error.detail == "a frame of 101 bytes exceeds the limit of 100");
    CHECK(parser.bytes_consumed() == 12);
    auto reply = error_reply(r.error);
    REQUIRE(reply);
    CHECK(std::get<Rejected>(*reply).reason == "frame_too_large");
    CHECK(std::get<Rejected>(*reply).detail == "offset 8: a frame of 101 bytes exceeds the limit of 100");

    // Exactly the limit is fine: the parser waits for the body.
    FrameParser at_limit(100);
    CHECK(at_limit.feed(header(7, 88)).need_more());
    // A length field of max + 1, and a 4 GiB one, are refused from the header alone.
    CHECK(parse_error(header(4, kDefaultMaxFrameBytes + 1)).error == ProtocolError::frame_too_large);
    CHECK(parse_error(header(4, kDefaultMaxFrameBytes - kHeaderBytes + 1)).error == ProtocolError::frame_too_large);
    FrameParser default_limit;
    CHECK(default_limit.feed(header(4, kDefaultMaxFrameBytes - kHeaderBytes)).need_more());
    CHECK(parse_error(header(4, UINT32_MAX)).offset == 8);
  }
}

TEST_CASE("mesh: a peer that closes mid-frame leaves a truncated frame", "[mesh]") {
  const std::string whole = frame(7, u64(1) + u64(2));
  SECTION("clean close between frames") {
    Events events = parse(whole + whole);
    CHECK(events.frames.size() == 2);
    CHECK_FALSE(events.error.has_value());
    FrameParser parser;
    CHECK_FALSE(parser.finish().has_value());
  }
  SECTION("inside the header") {
    FrameError e = parse_error(whole.substr(0, 5));
    CHECK(e.error == ProtocolError::truncated);
    CHECK(e.offset == 0);
    CHECK(e.detail == "the peer closed the connection after 5 of the 12 header bytes");
    CHECK_FALSE(error_reply(e).has_value());
  }
  SECTION("inside the body, after a complete frame") {
    Events events = parse(whole + whole.substr(0, 20), 3);
    CHECK(events.frames.size() == 1);
    REQUIRE(events.error);
    CHECK(events.error->error == ProtocolError::truncated);
    CHECK(events.error->offset == whole.size());
    CHECK(events.error->detail == "the peer closed the connection after 8 of the 16 body bytes");
    CHECK(events.error->peer_version == 1);
  }
  SECTION("finish() on a failed parser repeats the error") {
    FrameParser parser;
    ParseResult r = parser.feed("ZCTL\x03");
    REQUIRE(r.failed());
    CHECK(parser.finish() == r.error);
  }
}

TEST_CASE("mesh: bodies are decoded exactly, with the offset of the bad field", "[mesh]") {
  const uint64_t body = kHeaderBytes;  // offset of the first body byte of the first frame

  SECTION("a string running past the end of the body") {
    // node_id says 70 bytes, the body holds 5 after the prefix.
    std::string b = byte(1) + byte(1) + u16(70) + "ctrl2";
    FrameError e = parse_error(frame(1, b));
    CHECK(e.error == ProtocolError::malformed_payload);
    CHECK(e.offset == body + 2);
    CHECK(e.detail == "hello.node_id: 70 bytes declared, 5 left in the body");
    // A length prefix cut in half.
    e = parse_error(frame(1, byte(1) + byte(1) + str("a") + byte(0)));
    CHECK(e.offset == body + 5);
    CHECK(e.detail == "hello.cluster_id: runs past the end of the body");
  }
  SECTION("a fixed-width field running past the end of the body") {
    FrameError e = parse_error(frame(7, u64(1) + std::string(2, '\0')));
    CHECK(e.offset == body + 8);
    CHECK(e.detail == "heartbeat.sequence: runs past the end of the body");
    CHECK(parse_error(frame(8, "")).offset == body);
    CHECK(parse_error(frame(1, "")).detail == "hello.min_version: runs past the end of the body");
  }
  SECTION("trailing bytes") {
    FrameError e = parse_error(frame(8, u64(1) + "x"));
    CHECK(e.error == ProtocolError::malformed_payload);
    CHECK(e.offset == body + 8);
    CHECK(e.detail == "heartbeat_ack: 1 byte after the last field");
    CHECK(parse_error(frame(1, hello_body() + std::string(2, '\0'))).offset == body + hello_body().size());
  }
  SECTION("ids with characters outside [A-Za-z0-9_.-]") {
    for (const std::string& bad :
         std::vector<std::string>{"ctrl 2", "ctrl/2", "ctrl\xc3\xa9", std::string("a\0b", 3), ""}) {
      FrameError e = parse_error(frame(1, hello_body("ctrl1", bad)));
      CHECK(e.error == ProtocolError::malformed_payload);
      CHECK(e.offset == body + 2 + 2 + 5);  // the cluster_id field
    }
    CHECK(parse_error(frame(1, hello_body("ctrl 2"))).detail ==
          "hello.node_id: byte 4 (0x20) is not one of [A-Za-z0-9_.-]");
    CHECK(parse_error(frame(1, hello_body(std::string(65, 'a')))).detail == "hello.node_id: 65 bytes, at most 64");
    CHECK(parse_error(frame(1, hello_body(""))).detail == "hello.node_id: is empty");
  }
  SECTION("version fields") {
    CHECK(parse_error(frame(1, hello_body("a", "b", 0, 1))).offset == body);
    FrameError e = parse_error(frame(1, hello_body("a", "b", 3, 2)));
    CHECK(e.offset == body + 1);
    CHECK(e.detail == "hello.max_version: 2 is below min_version 3");
    CHECK(parse_error(frame(2, byte(0) + str("a") + str("b"))).offset == body);
    CHECK(parse_error(frame(6, byte(0))).detail == "versions.count: lists no version");
    CHECK(parse_error(frame(6, byte(2) + byte(2) + byte(1))).offset == body + 2);
    CHECK(parse_error(frame(6, byte(2) + byte(0) + byte(1))).offset == body + 1);
    CHECK(parse_error(frame(6, byte(3) + byte(1) + byte(2))).offset == body + 3);
  }
  SECTION("accepted: member count and member fields") {
    FrameError e = parse_error(frame(4, str("ctrl1") + u16(kMaxMembers + 1)));
    CHECK(e.error == ProtocolError::malformed_payload);
    CHECK(e.offset == body + 7);
    CHECK(e.detail == "accepted.member_count: 257 members, at most 256");
    // A count the body cannot hold.
    e = parse_error(frame(4, str("ctrl1") + u16(2) + str("a") + str("a:1") + str("a:2") + byte(1)));
    CHECK(e.offset == body + 7 + 2 + 3 + 5 + 5 + 1);
    CHECK(e.detail == "accepted.members[1].id: runs past the end of the body");
    // voter is 0 or 1.
    e = parse_error(frame(4, str("ctrl1") + u16(1) + str("a") + str("a:1") + str("a:2") + byte(2)));
    CHECK(e.offset == body + 7 + 2 + 3 + 5 + 5);
    CHECK(e.detail == "accepted.members[0].voter: 2 is neither 0 nor 1");
    e = parse_error(frame(4, str("ctrl1") + u16(1) + str("a") + str("a 1") + str("a:2") + byte(0)));
    CHECK(e.offset == body + 7 + 2 + 3);
  }
  SECTION("free text must be UTF-8, reasons snake_case") {
    FrameError e = parse_error(frame(5, str("bad_token") + str("ok \xed\xa0\x80")));  // a surrogate
    CHECK(e.offset == body + 11);
    CHECK(e.detail == "rejected.detail: not valid UTF-8 at byte 3");
    CHECK(parse_error(frame(5, str("Bad") + str(""))).offset == body);
    CHECK(parse_error(frame(5, str("") + str(""))).offset == body);
    CHECK(parse_error(frame(3, str("a:1") + str("\xc0\x80"))).detail == "join.token: not valid UTF-8 at byte 0");
    CHECK(parse_error(frame(3, str("a:1") + str(std::string(1025, 't')))).offset == body + 5);
    CHECK(parse_error(frame(9, str("ctrl1") + str(""))).detail == "redirect.leader_mesh_addr: is empty");
  }
}

TEST_CASE("mesh: the parser stays failed after an error", "[mesh]") {
  FrameParser parser;
  ParseResult first = parser.feed(std::string("ZCTL\x01\x01\x00\x01", 8));
  REQUIRE(first.failed());
  CHECK(parser.failed());
  const uint64_t consumed = parser.bytes_consumed();
  ParseResult again = parser.feed(encode(HeartbeatAck{1}));
  CHECK(again.failed());
  CHECK(again.consumed == 0);
  CHECK(again.error == first.error);
  CHECK(parser.bytes_consumed() == consumed);
}

TEST_CASE("mesh: several frames per feed and one frame over many feeds give the same events", "[mesh]") {
  std::string stream;
  const std::vector<Message> sent = {
      Hello{1, 2, "ctrl2", "prod"},
      Join{"10.0.0.2:6263", "token"},
      Heartbeat{1, 1},
      HeartbeatAck{1},
      Accepted{"ctrl1", {{"ctrl1", "10.0.0.1:6262", "10.0.0.1:6263", true}}},
      Heartbeat{1, 2},
  };
  std::vector<uint64_t> offsets;
  for (const Message& m : sent) {
    offsets.push_back(stream.size());
    stream += encode(m);
  }
  const Events whole = parse(stream);
  REQUIRE_FALSE(whole.error);
  REQUIRE(whole.frames.size() == sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    CHECK(whole.frames[i].message == sent[i]);
    CHECK(whole.frames[i].offset == offsets[i]);
  }
  CHECK(whole.consumed == stream.size());

  for (size_t chunk : {1u, 2u, 5u, 11u, 12u, 13u, 64u}) {
    INFO("chunk " << chunk);
    const Events pieces = parse(stream, chunk);
    REQUIRE_FALSE(pieces.error);
    REQUIRE(pieces.frames.size() == sent.size());
    for (size_t i = 0; i < sent.size(); ++i) {
      CHECK(pieces.frames[i].message == whole.frames[i].message);
      CHECK(pieces.frames[i].offset == whole.frames[i].offset);
    }
    CHECK(pieces.consumed == stream.size());
  }

  // Errors too: byte-at-a-time reports the same error at the same offset.
  const std::string corrupt = stream.substr(0, offsets[4]) + frame(4, str("ctrl1") + u16(300));
  const Events one = parse(corrupt);
  const Events bytewise = parse(corrupt, 1);
  REQUIRE(one.error);
  CHECK(one.frames.size() == 4);
  CHECK(bytewise.frames.size() == 4);
  CHECK(bytewise.error == one.error);
  CHECK(one.error->offset == offsets[4] + kHeaderBytes + 7);

  // Random chunkings of the stream with a bad frame appended.
  std::mt19937 rng(7);
  const std::string tail = stream + frame(2, byte(1) + str("x") + str("y") + "!");
  const Events reference = parse(tail);
  REQUIRE(reference.error);
  for (int round = 0; round < 50; ++round) {
    FrameParser parser;
    std::vector<Message> got;
    std::optional<FrameError> error;
    size_t pos = 0;
    while (pos < tail.size() && !error) {
      const size_t n = std::min<size_t>(tail.size() - pos, 1 + rng() % 40);
      std::string_view in(tail.data() + pos, n);
      pos += n;
      for (;;) {
        ParseResult r = parser.feed(in);
        in.remove_prefix(r.consumed);
        if (r.has_frame()) {
          got.push_back(r.frame.message);
          continue;
        }
        if (r.failed()) error = r.error;
        break;
      }
    }
    CHECK(got.size() == sent.size());
    CHECK(error == reference.error);
  }
}

TEST_CASE("mesh: the parser remembers the peer's version for the stray event", "[mesh]") {
  FrameParser parser;
  CHECK_FALSE(parser.peer_version().has_value());
  CHECK(parser.feed("ZCTL").need_more());
  CHECK_FALSE(parser.peer_version().has_value());
  CHECK(parser.feed("\x01\x01").need_more());
  CHECK(parser.peer_version() == 1);
  CHECK(parser.bytes_consumed() == 6);
}

TEST_CASE("mesh: handshake happy path, then heartbeats", "[mesh]") {
  HandshakeMachine m("ctrl1", "prod");
  CHECK(m.state() == HandshakeMachine::State::awaiting_hello);
  CHECK(m.pending_step() == "hello");
  CHECK_FALSE(m.protocol_version().has_value());

  HandshakeOutcome o = m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
  CHECK(o.kind == HandshakeOutcome::Kind::reply);
  CHECK(o.reply == std::optional<Message>(HelloAck{1, "ctrl1", "prod"}));
  CHECK(m.pending_step() == "join");
  CHECK(m.peer_node_id() == "ctrl2");
  CHECK(m.protocol_version() == 1);

  o = m.on_frame(frame_of(Join{"10.0.0.2:6263", "t0k"}, 27));
  CHECK(o.kind == HandshakeOutcome::Kind::decide);
  CHECK_FALSE(o.reply.has_value());
  CHECK(m.pending_step() == "membership");
  CHECK(m.join() == Join{"10.0.0.2:6263", "t0k"});

  const Accepted accepted{"ctrl1", {{"ctrl1", "a:1", "a:2", true}, {"ctrl2", "b:1", "10.0.0.2:6263", true}}};
  CHECK(m.accept(accepted) == Message(accepted));
  CHECK(m.state() == HandshakeMachine::State::joined);
  CHECK(m.pending_step().empty());

  o = m.on_frame(frame_of(Heartbeat{3, 17}, 100));
  CHECK(o.kind == HandshakeOutcome::Kind::reply);
  CHECK(o.reply == std::optional<Message>(HeartbeatAck{17}));
  o = m.on_frame(frame_of(HeartbeatAck{5}, 128));
  CHECK(o.kind == HandshakeOutcome::Kind::none);
  CHECK(m.state() == HandshakeMachine::State::joined);
}

TEST_CASE("mesh: handshake messages out of order are unexpected_message", "[mesh]") {
  const auto expect_unexpected = [](HandshakeMachine& m, Message message, uint64_t offset) {
    const HandshakeOutcome o = m.on_frame(frame_of(std::move(message), offset));
    REQUIRE(o.kind == HandshakeOutcome::Kind::protocol_error);
    REQUIRE(o.error);
    CHECK(o.error->error == ProtocolError::unexpected_message);
    CHECK(o.error->offset == offset + 5);  // the type byte
    CHECK(o.error->peer_version == 1);
    REQUIRE(o.reply);
    CHECK(std::get<Rejected>(*o.reply).reason == "unexpected_message");
    CHECK(m.state() == HandshakeMachine::State::closed);
    return o;
  };
  SECTION("join before hello") {
    HandshakeMachine m("ctrl1", "prod");
    const HandshakeOutcome o = expect_unexpected(m, Join{"a:1", ""}, 0);
    CHECK(o.error->detail == "join frame where a hello was expected");
    CHECK(std::get<Rejected>(*o.reply).detail == "offset 5: join frame where a hello was expected");
  }
  SECTION("heartbeat before hello") {
    HandshakeMachine m("ctrl1", "prod");
    expect_unexpected(m, Heartbeat{1, 1}, 0);
  }
  SECTION("a second hello") {
    HandshakeMachine m("ctrl1", "prod");
    m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
    expect_unexpected(m, Hello{1, 1, "ctrl2", "prod"}, 27);
  }
  SECTION("messages only a node sends, sent by the client") {
    for (Message m2 : std::vector<Message>{HelloAck{1, "a", "b"}, Accepted{"a", {}}, Rejected{"x", ""}, Versions{{1}},
                                           Redirect{"a", "b:1"}}) {
      HandshakeMachine m("ctrl1", "prod");
      m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
      expect_unexpected(m, std::move(m2), 27);
    }
  }
  SECTION("anything while the join is decided") {
    HandshakeMachine m("ctrl1", "prod");
    m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
    m.on_frame(frame_of(Join{"a:1", ""}, 27));
    expect_unexpected(m, Heartbeat{1, 1}, 40);
  }
  SECTION("a join on a joined session") {
    HandshakeMachine m("ctrl1", "prod");
    m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
    m.on_frame(frame_of(Join{"a:1", ""}, 27));
    m.accept({"ctrl1", {}});
    expect_unexpected(m, Join{"a:1", ""}, 60);
  }
  SECTION("anything after the session closed") {
    HandshakeMachine m("ctrl1", "prod");
    m.reject("too_many_pending");
    expect_unexpected(m, Hello{1, 1, "ctrl2", "prod"}, 0);
  }
}

TEST_CASE("mesh: version negotiation picks the highest common version", "[mesh]") {
  CHECK(negotiate_version(1, 1, {1}) == 1);
  CHECK(negotiate_version(1, 3, {1, 2}) == 2);
  CHECK(negotiate_version(2, 9, {1, 2, 3}) == 3);
  CHECK(negotiate_version(2, 2, {1, 3}) == std::nullopt);
  CHECK(negotiate_version(4, 9, {1, 2, 3}) == std::nullopt);

  SECTION("a node that speaks 1 and 2 answers a 1..3 hello with 2") {
    HandshakeMachine m("ctrl1", "prod", {1, 2});
    const HandshakeOutcome o = m.on_frame(frame_of(Hello{1, 3, "ctrl2", "prod"}));
    CHECK(o.reply == std::optional<Message>(HelloAck{2, "ctrl1", "prod"}));
    CHECK(m.protocol_version() == 2);
    // From then on every frame carries the negotiated version.
    const HandshakeOutcome wrong = m.on_frame(frame_of(Join{"a:1", ""}, 27, 1));
    CHECK(wrong.kind == HandshakeOutcome::Kind::protocol_error);
    CHECK(wrong.error->error == ProtocolError::unsupported_version);
    CHECK(wrong.error->offset == 27 + 4);
    CHECK(wrong.error->peer_version == 1);
    CHECK(wrong.reply == std::optional<Message>(Versions{{1, 2}}));
  }
  SECTION("no common version: unsupported_version with the versions to send back") {
    HandshakeMachine m("ctrl1", "prod");
    const HandshakeOutcome o = m.on_frame(frame_of(Hello{2, 3, "ctrl2", "prod"}));
    CHECK(o.kind == HandshakeOutcome::Kind::protocol_error);
    REQUIRE(o.error);
    CHECK(o.error->error == ProtocolError::unsupported_version);
    CHECK(o.error->offset == kHeaderBytes);  // the hello's min_version
    CHECK(o.error->detail == "the peer speaks versions 2 to 3; this node speaks 1");
    CHECK(o.reply == std::optional<Message>(Versions{{1}}));
    CHECK(m.state() == HandshakeMachine::State::closed);
    CHECK(m.peer_node_id() == "ctrl2");  // for the protocol_error event
  }
}

TEST_CASE("mesh: handshake refusals and decisions", "[mesh]") {
  SECTION("another cluster") {
    HandshakeMachine m("ctrl1", "prod");
    const HandshakeOutcome o = m.on_frame(frame_of(Hello{1, 1, "ctrl2", "staging"}));
    CHECK(o.kind == HandshakeOutcome::Kind::rejected);
    REQUIRE(o.reply);
    CHECK(std::get<Rejected>(*o.reply).reason == "wrong_cluster");
    CHECK(m.state() == HandshakeMachine::State::closed);
    CHECK(m.peer_node_id() == "ctrl2");
  }
  SECTION("this node's own id") {
    HandshakeMachine m("ctrl1", "prod");
    const HandshakeOutcome o = m.on_frame(frame_of(Hello{1, 1, "ctrl1", "prod"}));
    CHECK(o.kind == HandshakeOutcome::Kind::rejected);
    CHECK(std::get<Rejected>(*o.reply).reason == "duplicate_id");
  }
  SECTION("rejected or redirected by the membership decision") {
    HandshakeMachine m("ctrl1", "prod");
    m.on_frame(frame_of(Hello{1, 1, "ctrl2", "prod"}));
    m.on_frame(frame_of(Join{"a:1", "wrong"}, 27));
    SECTION("reject") {
      CHECK(m.reject("bad_token", "the join token does not match") ==
            Message(Rejected{"bad_token", "the join token does not match"}));
      CHECK(m.state() == HandshakeMachine::State::closed);
      CHECK_THROWS_AS(m.accept({"ctrl1", {}}), std::logic_error);
    }
    SECTION("redirect") {
      CHECK(m.redirect({"ctrl3", "10.0.0.3:6262"}) == Message(Redirect{"ctrl3", "10.0.0.3:6262"}));
      CHECK(m.state() == HandshakeMachine::State::closed);
    }
  }
  SECTION("a session can be refused before any frame, and details are clipped") {
    HandshakeMachine m("ctrl1", "prod");
    const Message reply = m.reject("too_many_pending", std::string(2000, 'x'));
    CHECK(std::get<Rejected>(reply).detail.size() == kMaxDetailBytes);
    CHECK_NOTHROW(encode(reply));
  }
  SECTION("programmer errors") {
    HandshakeMachine m("ctrl1", "prod");
    CHECK_THROWS_AS(m.accept({"ctrl1", {}}), std::logic_error);
    CHECK_THROWS_AS(m.redirect({"ctrl1", "a:1"}), std::logic_error);
    CHECK_THROWS_AS(m.reject("Not Snake"), std::invalid_argument);
    CHECK_THROWS_AS(HandshakeMachine("ctrl 1", "prod"), std::invalid_argument);
    CHECK_THROWS_AS(HandshakeMachine("ctrl1", ""), std::invalid_argument);
    CHECK_THROWS_AS(HandshakeMachine("ctrl1", "prod", {}), std::invalid_argument);
  }
}

TEST_CASE("mesh: parser and handshake together, as a session uses them", "[mesh]") {
  const std::string client =
      encode(Hello{1, 1, "ctrl2", "prod"}) + encode(Join{"10.0.0.2:6263", ""}) + encode(Heartbeat{1, 1});
  FrameParser parser;
  HandshakeMachine machine("ctrl1", "prod");
  std::vector<HandshakeOutcome::Kind> kinds;
  std::string_view in = client;
  for (;;) {
    ParseResult r = parser.feed(in);
    in.remove_prefix(r.consumed);
    if (!r.has_frame()) break;
    kinds.push_back(machine.on_frame(r.frame).kind);
    if (kinds.back() == HandshakeOutcome::Kind::decide) machine.accept({"ctrl1", {}});
  }
  CHECK(kinds == std::vector<HandshakeOutcome::Kind>{HandshakeOutcome::Kind::reply, HandshakeOutcome::Kind::decide,
                                                     HandshakeOutcome::Kind::reply});
  CHECK(parser.bytes_consumed() == client.size());
  CHECK_FALSE(parser.finish().has_value());
}

TEST_CASE("mesh: a join may carry the joiner's mesh and admin addresses, as a pair", "[mesh]") {
  const Join with{"10.0.0.2:6263", "t0k", "10.0.0.2:6262", "-"};
  CHECK(round_trip(with) == Message(with));
  // Without the pair the body ends after the token, as before.
  CHECK(encode(Join{"10.0.0.2:6263", "t0k"}) == frame(3, str("10.0.0.2:6263") + str("t0k")));
  CHECK(encode(with) == frame(3, str("10.0.0.2:6263") + str("t0k") + str("10.0.0.2:6262") + str("-")));
  // Half a pair is a malformed join, caught at the missing field.
  const std::string half = frame(3, str("10.0.0.2:6263") + str("t0k") + str("10.0.0.2:6262"));
  const FrameError error = parse_error(half);
  CHECK(error.error == ProtocolError::malformed_payload);
  CHECK(error.offset == half.size());
  CHECK_THROWS_AS(encode(Join{"a:1", "", "b:2", ""}), std::invalid_argument);
}

TEST_CASE("mesh: the dialling side of the handshake", "[mesh]") {
  const Join join{"10.0.0.2:6263", "t0k", "10.0.0.2:6262", "10.0.0.2:6280"};
  ClientHandshake client("ctrl2", "prod", join, "ctrl1");
  CHECK(client.hello_frame() == encode(Hello{1, kSupportedVersions.back(), "ctrl2", "prod"}));

  SECTION("accepted, then heartbeats answered") {
    ClientStep step = client.on_message(HelloAck{1, "ctrl1", "prod"});
    REQUIRE(step.kind == ClientStep::Kind::send);
    CHECK(step.reply == encode(join, 1));
    CHECK(client.peer_id() == "ctrl1");
    CHECK(client.version() == 1);
    CHECK(client.on_message(Accepted{"ctrl1", {}}).kind == ClientStep::Kind::joined);
    CHECK(client.joined());
    step = client.on_message(Heartbeat{7, 42});
    REQUIRE(step.kind == ClientStep::Kind::send);
    CHECK(step.reply == encode(HeartbeatAck{42}, 1));
    CHECK(client.on_message(HeartbeatAck{3}).kind == ClientStep::Kind::alive);
    CHECK(client.on_message(Accepted{"ctrl1", {}}).kind == ClientStep::Kind::failed);  // twice
  }
  SECTION("a follower redirects to the leader") {
    client.on_message(HelloAck{1, "ctrl1", "prod"});
    const ClientStep step = client.on_message(Redirect{"ctrl3", "10.0.0.3:6262"});
    REQUIRE(step.kind == ClientStep::Kind::redirect);
    CHECK(step.redirect.leader_mesh_addr == "10.0.0.3:6262");
  }
  SECTION("a refusal carries the node's reason") {
    client.on_message(HelloAck{1, "ctrl1", "prod"});
    const ClientStep step = client.on_message(Rejected{"not_member", "add it first"});
    REQUIRE(step.kind == ClientStep::Kind::rejected);
    CHECK(step.rejected.reason == "not_member");
  }
  SECTION("the wrong node, the wrong cluster, or frames out of order fail") {
    ClientHandshake other("ctrl2", "prod", join, "ctrl1");
    CHECK(other.on_message(HelloAck{1, "ctrl9", "prod"}).kind == ClientStep::Kind::failed);
    ClientHandshake cluster("ctrl2", "prod", join);
    CHECK(cluster.on_message(HelloAck{1, "ctrl1", "test"}).detail.find("cluster 'test'") != std::string::npos);
    ClientHandshake early("ctrl2", "prod", join);
    CHECK(early.on_message(Accepted{"ctrl1", {}}).kind == ClientStep::Kind::failed);
    CHECK(early.on_message(Heartbeat{1, 1}).kind == ClientStep::Kind::failed);
    ClientHandshake version("ctrl2", "prod", join);
    CHECK(version.on_message(HelloAck{9, "ctrl1", "prod"}).kind == ClientStep::Kind::failed);
  }
}
