// libFuzzer target for the mesh protocol parser and handshake
// (core/src/mesh_protocol.cpp). Each input is a raw byte stream as a peer
// would send it on the mesh port; the seeds in corpus/mesh/ are such streams.
//
// Besides "no crash, no sanitizer report", it checks properties that must hold
// for every input:
//  - feeding the stream in one piece, byte by byte, or in pseudo-random
//    chunks gives the same frames, offsets and error;
//  - every decoded message re-encodes (encode() accepts it) to bytes that
//    parse back to the same message;
//  - error offsets lie inside what the parser consumed, and a failed parser
//    stays failed;
//  - the handshake machine never throws on peer input, and every reply it or
//    error_reply() produces encodes.
// A broken property calls __builtin_trap(), which libFuzzer reports as a crash.
//
// Build and run: tests/fuzz/run_fuzz.sh [SECONDS]
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mesh_protocol.hpp"

using namespace zctl::mesh;

namespace {

// Small, so frame_too_large is reachable with short inputs; large enough
// for every seed.
constexpr uint32_t kMaxFrameBytes = 2048;

void require(bool condition) {
  if (!condition) __builtin_trap();
}

struct Run {
  std::vector<Frame> frames;
  std::optional<FrameError> error;
  uint64_t consumed = 0;
};

bool same(const Run& a, const Run& b) {
  if (a.frames.size() != b.frames.size() || a.error != b.error || a.consumed != b.consumed) return false;
  for (size_t i = 0; i < a.frames.size(); ++i) {
    const Frame& x = a.frames[i];
    const Frame& y = b.frames[i];
    if (x.version != y.version || x.offset != y.offset || !(x.message == y.message)) return false;
  }
  return true;
}

// next_chunk(remaining) -> how many bytes the next feed() gets.
template <typename Chunker>
Run parse(std::string_view stream, Chunker next_chunk) {
  FrameParser parser(kMaxFrameBytes);
  Run run;
  size_t pos = 0;
  while (pos < stream.size() && !run.error) {
    const size_t n = next_chunk(stream.size() - pos);
    require(n >= 1 && n <= stream.size() - pos);
    std::string_view in = stream.substr(pos, n);
    pos += n;
    for (;;) {
      const ParseResult r = parser.feed(in);
      require(r.consumed <= in.size());
      in.remove_prefix(r.consumed);
      if (r.has_frame()) {
        run.frames.push_back(r.frame);
        continue;
      }
      if (r.failed()) {
        run.error = r.error;
        require(parser.failed());
        // Failed stays failed and takes nothing more.
        const ParseResult again = parser.feed(in);
        require(again.failed() && again.consumed == 0 && again.error == r.error);
      } else {
        require(in.empty());
      }
      break;
    }
  }
  if (!run.error) {
    run.error = parser.finish();
    if (!run.error) require(parser.bytes_consumed() == stream.size());
  }
  run.consumed = parser.bytes_consumed();
  if (run.error) {
    require(parser.failed());
    // A field missing at the end of a body is reported where it would start,
    // just past the frame; every other error points at a byte that arrived.
    require(run.error->offset <= run.consumed);
    if (run.error->error != ProtocolError::malformed_payload) require(run.error->offset < run.consumed);
    require(parser.finish() == run.error);
  }
  return run;
}

void check_round_trip(const Frame& frame) {
  std::string bytes;
  try {
    bytes = encode(frame.message, frame.version);
  } catch (...) {
    require(false);  // a message the parser accepted must be encodable
  }
  FrameParser parser(UINT32_MAX);
  const ParseResult r = parser.feed(bytes);
  require(r.has_frame() && r.consumed == bytes.size());
  require(r.frame.message == frame.message && r.frame.version == frame.version);
}

void check_encodes(const std::optional<Message>& message) {
  if (!message) return;
  try {
    (void)encode(*message);
  } catch (...) {
    require(false);
  }
}

void drive_handshake(const Run& run) {
  HandshakeMachine machine("ctrl1", "prod");
  for (const Frame& frame : run.frames) {
    HandshakeOutcome outcome;
    try {
      outcome = machine.on_frame(frame);
      check_encodes(outcome.reply);
      if (outcome.kind == HandshakeOutcome::Kind::decide) {
        require(machine.pending_step() == "membership");
        // Alternate the decision with the token so all three paths run.
        const size_t pick = machine.join().token.size() % 3;
        if (pick == 0) check_encodes(machine.accept({"ctrl1", {{"ctrl1", "127.0.0.1:6262", "127.0.0.1:6263", true}}}));
        if (pick == 1) check_encodes(machine.reject("bad_token", "token " + machine.join().token));
        if (pick == 2) check_encodes(machine.redirect({"ctrl3", "10.0.0.3:6262"}));
      }
    } catch (...) {
      require(false);  // peer input never makes the machine throw
    }
    if (outcome.kind == HandshakeOutcome::Kind::protocol_error) {
      require(outcome.error.has_value());
      require(machine.state() == HandshakeMachine::State::closed);
      break;
    }
    if (outcome.kind == HandshakeOutcome::Kind::rejected) {
      require(machine.state() == HandshakeMachine::State::closed);
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view stream(reinterpret_cast<const char*>(data), size);

  const Run whole = parse(stream, [](size_t remaining) { return remaining; });
  const Run bytewise = parse(stream, [](size_t) { return size_t{1}; });
  require(same(whole, bytewise));
  uint32_t state = static_cast<uint32_t>(size) * 2654435761u + 1;
  const Run chunked = parse(stream, [&state](size_t remaining) {
    state = state * 1103515245u + 12345u;
    return std::min<size_t>(remaining, 1 + (state >> 16) % 29);
  });
  require(same(whole, chunked));

  for (const Frame& frame : whole.frames) check_round_trip(frame);
  if (whole.error) check_encodes(error_reply(*whole.error));
  drive_handshake(whole);
  return 0;
}
