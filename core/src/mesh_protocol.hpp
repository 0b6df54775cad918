// The mesh wire protocol (man/zctl-protocol.7): message types, the frame
// encoder, a pure incremental frame parser and the server side of the join
// handshake. No sockets, no Asio, no clocks: a mesh session feeds the bytes it
// reads to a FrameParser, hands each decoded Frame to its HandshakeMachine,
// writes whatever reply comes back and owns every deadline (the stray grace
// period, heartbeat timeouts) itself.
//
// Threads: none of these types is shared; one session owns one FrameParser
// and one HandshakeMachine and calls them from its own strand.
//
// Errors: malformed input is expected, so the parse path never throws; it
// reports a FrameError. Only programmer errors throw: encode() of a message
// that breaks the protocol's own limits, and HandshakeMachine calls made in
// the wrong state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace zctl::mesh {

// ---- constants (each one is part of the wire contract) --------------------

inline constexpr std::array<uint8_t, 4> kMagic = {0x5A, 0x43, 0x54, 0x4C};  // "ZCTL"
inline constexpr size_t kHeaderBytes = 12;
// Versions this build speaks, ascending. The versions reply lists them.
inline constexpr std::array<uint8_t, 1> kSupportedVersions = {1};
inline constexpr uint8_t kLowestVersion = 1;              // the version of every frame sent before negotiation
inline constexpr uint32_t kDefaultMaxFrameBytes = 65536;  // mesh.max_frame_bytes: header + body

// Per-field limits, in bytes.
inline constexpr size_t kMaxIdBytes = 64;        // node, cluster, leader and member ids
inline constexpr size_t kMaxAddressBytes = 255;  // HOST:PORT
inline constexpr size_t kMaxTokenBytes = 1024;
inline constexpr size_t kMaxReasonBytes = 64;
inline constexpr size_t kMaxDetailBytes = 1024;
inline constexpr size_t kMaxMembers = 256;  // entries in one accepted message

// ---- errors ---------------------------------------------------------------

enum class ProtocolError {
  bad_magic,
  unsupported_version,
  frame_too_large,
  truncated,
  malformed_payload,
  unexpected_message,
};

// The snake_case reason used in the protocol_error event, the
// controller_protocol_errors_total{reason} label and the rejected reply.
std::string_view to_string(ProtocolError error);

// Everything a connection/protocol_error event needs.
struct FrameError {
  ProtocolError error = ProtocolError::malformed_payload;
  uint64_t offset = 0;                  // absolute offset in the byte stream of the offending field
  std::string detail;                   // one human sentence, no secrets
  std::optional<uint8_t> peer_version;  // version byte of the peer's current frame, once seen

  bool operator==(const FrameError&) const = default;
};

// ---- messages -------------------------------------------------------------

enum class MessageType : uint8_t {
  hello = 1,
  hello_ack = 2,
  join = 3,
  accepted = 4,
  rejected = 5,
  versions = 6,
  heartbeat = 7,
  heartbeat_ack = 8,
  redirect = 9,
};
std::string_view to_string(MessageType type);

struct Hello {  // client -> node, first frame
  uint8_t min_version = 1;
  uint8_t max_version = 1;
  std::string node_id;
  std::string cluster_id;
  bool operator==(const Hello&) const = default;
};

struct HelloAck {  // node -> client: the negotiated version and who answered
  uint8_t version = 1;
  std::string node_id;
  std::string cluster_id;
  bool operator==(const HelloAck&) const = default;
};

struct Join {  // client -> node, after hello_ack
  std::string raft_addr;
  std::string token;  // empty when the cluster has no join token
  // Optional, sent together or not at all: where the joiner's own mesh port
  // and admin API are reached ("-" for an unknown one).
  std::string mesh_addr{};
  std::string admin_addr{};
  bool operator==(const Join&) const = default;
};

struct Member {
  std::string id;
  std::string mesh_addr;
  std::string raft_addr;
  bool voter = false;
  bool operator==(const Member&) const = default;
};

struct Accepted {  // node -> client: the joiner is a member now
  std::string leader_id;
  std::vector<Member> members;
  bool operator==(const Accepted&) const = default;
};

struct Rejected {      // node -> client, then close
  std::string reason;  // snake_case: not_member, bad_token, wrong_cluster, ... or a ProtocolError reason
  std::string detail;
  bool operator==(const Rejected&) const = default;
};

struct Versions {                 // node -> client after bad magic or an unsupported version, then close
  std::vector<uint8_t> versions;  // ascending, non-zero, at least one
  bool operator==(const Versions&) const = default;
};

struct Heartbeat {  // either direction on a joined session
  uint64_t term = 0;
  uint64_t sequence = 0;
  bool operator==(const Heartbeat&) const = default;
};

struct HeartbeatAck {
  uint64_t sequence = 0;  // echoes the heartbeat's
  bool operator==(const HeartbeatAck&) const = default;
};

struct Redirect {  // node -> client: ask the leader instead, then close
  std::string leader_id;
  std::string leader_mesh_addr;
  bool operator==(const Redirect&) const = default;
};

// Alternative index + 1 == the MessageType value.
using Message = std::variant<Hello, HelloAck, Join, Accepted, Rejected, Versions, Heartbeat, HeartbeatAck, Redirect>;

MessageType type_of(const Message& message);

// One whole frame: header, then body. `version` is written as given (the
// probe uses an unsupported one on purpose). Throws std::invalid_argument
// naming the field when the message breaks a limit above (an id with a space,
// 300 members, ...): a peer would reject the frame, so it is a bug here.
std::string encode(const Message& message, uint8_t version = kLowestVersion);

// The frame a node sends before closing on `error`, or nothing:
//  bad_magic, unsupported_version -> Versions{kSupportedVersions}
//  frame_too_large, malformed_payload, unexpected_message -> Rejected{reason, detail with the offset}
//  truncated -> nothing (the peer has gone)
// Encode it with kLowestVersion.
std::optional<Message> error_reply(const FrameError& error);

// ---- the parser -----------------------------------------------------------

struct Frame {
  uint8_t version = 0;  // the header's version byte
  uint64_t offset = 0;  // stream offset of the frame's first byte
  Message message;
};

struct ParseResult {
  enum class Status { need_more, frame, error };
  Status status = Status::need_more;
  size_t consumed = 0;  // bytes of this call's input the parser took
  Frame frame;          // status == frame
  FrameError error;     // status == error

  bool need_more() const { return status == Status::need_more; }
  bool has_frame() const { return status == Status::frame; }
  bool failed() const { return status == Status::error; }
};

// Pure, incremental: bytes in, frames or one error out. Checks each header
// field the moment its last byte arrives (a wrong magic byte at once, the
// version at byte 4, the length before any body byte is kept), and buffers
// only a frame that arrives in pieces; a frame wholly inside one feed() is
// decoded in place.
//
//   std::string_view in = bytes_read;
//   for (;;) {
//     auto r = parser.feed(in);
//     in.remove_prefix(r.consumed);
//     if (r.has_frame()) { handle(r.frame); continue; }
//     if (r.failed()) { report(r.error); close(); }
//     break;  // need_more: all of `in` was taken
//   }
class FrameParser {
 public:
  // max_frame_bytes: the largest whole frame accepted, header included; a
  // length field with 12 + length > max_frame_bytes is frame_too_large.
  explicit FrameParser(uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

  // Takes bytes from the front of `input` up to the end of the next frame.
  // need_more: all of `input` was taken and no frame is complete yet.
  // frame: one frame decoded; the rest of `input` is untouched (feed it again).
  // error: the parser failed and stays failed; every later call returns the
  // same error and takes nothing.
  ParseResult feed(std::string_view input);

  // The peer closed the stream. A partial frame is `truncated` at the offset
  // where it started; at a frame boundary nothing is wrong (nullopt). After
  // an error, returns that error again.
  std::optional<FrameError> finish();

  bool failed() const { return failed_; }
  uint64_t bytes_consumed() const { return consumed_; }
  // The version byte of the newest frame header seen, even a partial frame's
  // (the stray event's protocolVersion when no hello completed).
  std::optional<uint8_t> peer_version() const { return peer_version_; }
  uint32_t max_frame_bytes() const { return max_frame_bytes_; }

 private:
  bool fail(ProtocolError error, uint64_t offset, std::string detail);  // always false
  ParseResult error_result(size_t consumed) const;
  bool check_header_byte(size_t index);
  ParseResult finish_frame(std::string_view body, size_t consumed);

  uint32_t max_frame_bytes_;
  std::array<uint8_t, kHeaderBytes> header_{};
  size_t header_have_ = 0;
  uint32_t body_length_ = 0;
  std::string body_;  // the part of a body that arrived in earlier feeds
  uint64_t consumed_ = 0;
  uint64_t frame_start_ = 0;
  std::optional<uint8_t> peer_version_;
  bool failed_ = false;
  FrameError error_;
};

// ---- the server side of the handshake -------------------------------------

// What a session does with one frame the HandshakeMachine has seen.
struct HandshakeOutcome {
  enum class Kind {
    none,            // nothing to send (a heartbeat_ack arrived)
    reply,           // send `reply`, keep reading (hello_ack, heartbeat_ack)
    decide,          // a join arrived: check the token and membership (machine.join()),
                     // then call accept(), reject() or redirect()
    rejected,        // send `reply` (a Rejected), emit connection/rejected, close
    protocol_error,  // emit connection/protocol_error from `error`, send `reply` if set, close
  };
  Kind kind = Kind::none;
  std::optional<Message> reply;
  std::optional<FrameError> error;
};

// One accepted mesh connection, from the first frame to joined or closed:
//   awaiting_hello --hello--> awaiting_join --join--> awaiting_membership
//     --accept()--> joined      (heartbeats from then on)
//     --reject() / redirect() / any error--> closed
// It checks the order of messages, negotiates the version, refuses a hello
// for another cluster (wrong_cluster) or carrying this node's own id
// (duplicate_id), and remembers what the stray event needs. The token and
// membership decision is made outside, after `decide`.
class HandshakeMachine {
 public:
  enum class State { awaiting_hello, awaiting_join, awaiting_membership, joined, closed };

  // Ids of this node, sent back in hello_ack. Throws std::invalid_argument
  // when either is not a protocol id.
  HandshakeMachine(std::string local_node_id, std::string cluster_id,
                   std::vector<uint8_t> supported_versions = {kSupportedVersions.begin(), kSupportedVersions.end()});

  HandshakeOutcome on_frame(const Frame& frame);

  // awaiting_membership -> joined; returns the message to send.
  Message accept(Accepted accepted);
  // Any state before joined -> closed; returns the Rejected to send (also
  // for too_many_pending before any frame). Throws std::invalid_argument
  // when the reason is not a protocol reason.
  Message reject(std::string reason, std::string detail = {});
  // awaiting_membership -> closed; returns the Redirect to send.
  Message redirect(Redirect redirect);

  State state() const { return state_; }
  // SPEC pendingStep: "hello", "join" or "membership"; empty once joined or
  // closed. ("tls_handshake" is the session's to report.)
  std::string_view pending_step() const;
  const std::string& peer_node_id() const { return peer_node_id_; }     // empty before hello
  std::optional<uint8_t> protocol_version() const { return version_; }  // negotiated
  const Join& join() const { return join_; }                            // valid from awaiting_membership

 private:
  HandshakeOutcome fail(ProtocolError error, const Frame& frame, uint64_t offset, std::string detail);

  std::string local_node_id_;
  std::string cluster_id_;
  std::vector<uint8_t> supported_;
  State state_ = State::awaiting_hello;
  std::string peer_node_id_;
  std::optional<uint8_t> version_;
  Join join_;
};

// ---- the client side of the handshake -------------------------------------

// What a dialling node does with one frame from the node it dialled.
struct ClientStep {
  enum class Kind {
    send,      // write `reply` (join after hello_ack, heartbeat_ack), keep reading
    joined,    // the join was accepted: the session is up (renew the idle deadline)
    alive,     // a heartbeat_ack: renew the idle deadline
    redirect,  // ask `redirect.leader_mesh_addr` instead; the node closes
    rejected,  // refused with `rejected`; the node closes
    failed,    // a protocol violation or a wrong peer: close; `detail` says why
  };
  Kind kind = Kind::failed;
  std::string reply;  // send: the encoded frame
  Redirect redirect;
  Rejected rejected;
  std::string detail;
};

// The dialling side: hello (sent by the caller, hello_frame()) -> hello_ack
// -> join -> accepted | rejected | redirect, then heartbeats answered.
// Pure: bytes out, decisions out; the caller owns the socket and deadlines.
class ClientHandshake {
 public:
  // `expected_peer`: the node id the dialled address must belong to ("" any).
  ClientHandshake(std::string node_id, std::string cluster_id, Join join, std::string expected_peer = {});

  std::string hello_frame() const;
  ClientStep on_message(const Message& message);

  bool joined() const { return joined_; }
  const std::string& peer_id() const { return peer_id_; }  // from hello_ack
  uint8_t version() const { return version_; }           // negotiated; 0 before hello_ack

 private:
  std::string node_id_;
  std::string cluster_id_;
  Join join_;
  std::string expected_peer_;
  std::string peer_id_;
  uint8_t version_ = 0;
  bool joined_ = false;
};

// Picks the highest version in both [min_version, max_version] and
// `supported` (ascending); nullopt when there is none.
std::optional<uint8_t> negotiate_version(uint8_t min_version, uint8_t max_version,
                                         const std::vector<uint8_t>& supported);

}  // namespace zctl::mesh
