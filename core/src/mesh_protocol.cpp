#include "mesh_protocol.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace zctl::mesh {

namespace {

// ---- text fields ------------------------------------------------------------

// The five kinds of string field, each with its own length range and alphabet.
// Ids end up in event JSON, metric-free logs and file names, so they get a
// narrow alphabet; addresses are HOST:PORT and never contain spaces; free text
// only has to be valid UTF-8 (it is JSON-escaped wherever it goes).
enum class Text { id, address, token, reason, detail };

struct TextRule {
  size_t min;
  size_t max;
};

constexpr TextRule rule_of(Text kind) {
  switch (kind) {
    case Text::id:
      return {1, kMaxIdBytes};
    case Text::address:
      return {1, kMaxAddressBytes};
    case Text::token:
      return {0, kMaxTokenBytes};
    case Text::reason:
      return {1, kMaxReasonBytes};
    case Text::detail:
      return {0, kMaxDetailBytes};
  }
  return {0, 0};
}

bool id_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}
bool address_char(unsigned char c) { return c >= 0x21 && c <= 0x7E; }
bool reason_char(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }

// Index of the first byte that does not start a well-formed UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF included), or npos.
size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (len > s.size() - i) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string hex_byte(unsigned char b) {
  constexpr char digits[] = "0123456789abcdef";
  return std::string{'0', 'x', digits[b >> 4], digits[b & 0xF]};
}

// "1" or "1,2": for details.
template <typename List>
std::string version_list(const List& versions) {
  std::string text;
  for (uint8_t v : versions) text += (text.empty() ? "" : ",") + std::to_string(v);
  return text;
}

// Empty when `s` is a valid value of `kind`, else what is wrong with it.
std::string text_problem(std::string_view s, Text kind) {
  const TextRule rule = rule_of(kind);
  if (s.size() < rule.min) return "is empty";
  if (s.size() > rule.max) return std::to_string(s.size()) + " bytes, at most " + std::to_string(rule.max);
  bool (*allowed)(unsigned char) = nullptr;
  const char* alphabet = "";
  switch (kind) {
    case Text::id:
      allowed = id_char, alphabet = "[A-Za-z0-9_.-]";
      break;
    case Text::address:
      allowed = address_char, alphabet = "printable ASCII without spaces";
      break;
    case Text::reason:
      allowed = reason_char, alphabet = "[a-z0-9_]";
      break;
    case Text::token:
    case Text::detail: {
      const size_t bad = invalid_utf8_at(s);
      if (bad == std::string_view::npos) return {};
      return "not valid UTF-8 at byte " + std::to_string(bad);
    }
  }
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!allowed(c)) return "byte " + std::to_string(i) + " (" + hex_byte(c) + ") is not one of " + alphabet;
  }
  return {};
}

// Cuts free text to the detail limit without splitting a UTF-8 sequence.
std::string clip_detail(std::string text) {
  if (text.size() <= kMaxDetailBytes) return text;
  size_t cut = kMaxDetailBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  return text;
}

// ---- decoding -----------------------------------------------------------------

// Reads one body. Every read names its field; the first failure records a
// malformed_payload error at the absolute offset of that field and makes
// every later read fail too, so decoders can chain reads with &&.
class Reader {
 public:
  Reader(std::string_view body, uint64_t base, std::string_view message, FrameError& error)
      : body_(body), base_(base), message_(message), error_(error) {}

  bool u8(uint8_t& out, const char* field) {
    if (!need(1, field)) return false;
    out = byte(pos_++);
    return true;
  }

  bool u16(uint16_t& out, const char* field) {
    if (!need(2, field)) return false;
    out = static_cast<uint16_t>(byte(pos_) << 8 | byte(pos_ + 1));
    pos_ += 2;
    return true;
  }

  bool u64(uint64_t& out, const char* field) {
    if (!need(8, field)) return false;
    out = 0;
    for (size_t i = 0; i < 8; ++i) out = out << 8 | byte(pos_ + i);
    pos_ += 8;
    return true;
  }

  bool text(std::string& out, const char* field, Text kind) {
    const size_t start = pos_;
    uint16_t length = 0;
    if (!u16(length, field)) return false;
    if (length > body_.size() - pos_) {
      return fail_at(
          start, field,
          std::to_string(length) + " bytes declared, " + std::to_string(body_.size() - pos_) + " left in the body");
    }
    const std::string_view value = body_.substr(pos_, length);
    if (std::string problem = text_problem(value, kind); !problem.empty()) {
      return fail_at(start, field, std::move(problem));
    }
    out.assign(value);
    pos_ += length;
    return true;
  }

  // The body must be consumed exactly.
  bool end() {
    if (failed_ || pos_ == body_.size()) return !failed_;
    const size_t extra = body_.size() - pos_;
    return fail_at(pos_, nullptr, std::to_string(extra) + (extra == 1 ? " byte" : " bytes") + " after the last field");
  }

  bool fail_at(size_t pos, const char* field, std::string problem) {
    if (failed_) return false;
    failed_ = true;
    error_.error = ProtocolError::malformed_payload;
    error_.offset = base_ + pos;
    std::string detail(message_);
    if (member_ >= 0) detail += ".members[" + std::to_string(member_) + "]";
    if (field != nullptr) detail += std::string(".") + field;
    detail += ": " + problem;
    error_.detail = std::move(detail);
    return false;
  }

  size_t pos() const { return pos_; }
  size_t left() const { return body_.size() - pos_; }
  void set_member(int index) { member_ = index; }

 private:
  bool need(size_t n, const char* field) {
    if (failed_) return false;
    if (n <= body_.size() - pos_) return true;
    return fail_at(pos_, field, "runs past the end of the body");
  }
  uint8_t byte(size_t i) const { return static_cast<uint8_t>(body_[i]); }

  std::string_view body_;
  size_t pos_ = 0;
  uint64_t base_;
  std::string_view message_;
  FrameError& error_;
  bool failed_ = false;
  int member_ = -1;
};

bool decode_hello(Reader& r, Hello& m) {
  const size_t min_at = r.pos();
  if (!r.u8(m.min_version, "min_version")) return false;
  if (m.min_version == 0) return r.fail_at(min_at, "min_version", "0 is not a version");
  const size_t max_at = r.pos();
  if (!r.u8(m.max_version, "max_version")) return false;
  if (m.max_version < m.min_version) {
    return r.fail_at(max_at, "max_version",
                     std::to_string(m.max_version) + " is below min_version " + std::to_string(m.min_version));
  }
  return r.text(m.node_id, "node_id", Text::id) && r.text(m.cluster_id, "cluster_id", Text::id);
}

bool decode_hello_ack(Reader& r, HelloAck& m) {
  const size_t at = r.pos();
  if (!r.u8(m.version, "version")) return false;
  if (m.version == 0) return r.fail_at(at, "version", "0 is not a version");
  return r.text(m.node_id, "node_id", Text::id) && r.text(m.cluster_id, "cluster_id", Text::id);
}

bool decode_join(Reader& r, Join& m) {
  if (!r.text(m.raft_addr, "raft_addr", Text::address) || !r.text(m.token, "token", Text::token)) return false;
  if (r.left() == 0) return true;  // the advertised addresses are optional, and come as a pair
  return r.text(m.mesh_addr, "mesh_addr", Text::address) && r.text(m.admin_addr, "admin_addr", Text::address);
}

// Smallest encoded member: three one-byte strings and the voter byte.
constexpr size_t kMinMemberBytes = 3 * 3 + 1;

bool decode_accepted(Reader& r, Accepted& m) {
  if (!r.text(m.leader_id, "leader_id", Text::id)) return false;
  const size_t count_at = r.pos();
  uint16_t count = 0;
  if (!r.u16(count, "member_count")) return false;
  if (count > kMaxMembers) {
    return r.fail_at(count_at, "member_count",
                     std::to_string(count) + " members, at most " + std::to_string(kMaxMembers));
  }
  // Reserve only what the body can hold, so a lying count costs nothing.
  m.members.reserve(std::min<size_t>(count, r.left() / kMinMemberBytes));
  for (uint16_t i = 0; i < count; ++i) {
    r.set_member(i);
    Member& member = m.members.emplace_back();
    if (!r.text(member.id, "id", Text::id) || !r.text(member.mesh_addr, "mesh_addr", Text::address) ||
        !r.text(member.raft_addr, "raft_addr", Text::address)) {
      return false;
    }
    const size_t voter_at = r.pos();
    uint8_t voter = 0;
    if (!r.u8(voter, "voter")) return false;
    if (voter > 1) return r.fail_at(voter_at, "voter", std::to_string(voter) + " is neither 0 nor 1");
    member.voter = voter == 1;
  }
  r.set_member(-1);
  return true;
}

bool decode_rejected(Reader& r, Rejected& m) {
  return r.text(m.reason, "reason", Text::reason) && r.text(m.detail, "detail", Text::detail);
}

bool decode_versions(Reader& r, Versions& m) {
  const size_t count_at = r.pos();
  uint8_t count = 0;
  if (!r.u8(count, "count")) return false;
  if (count == 0) return r.fail_at(count_at, "count", "lists no version");
  m.versions.reserve(std::min<size_t>(count, r.left()));
  for (unsigned i = 0; i < count; ++i) {
    const size_t at = r.pos();
    uint8_t version = 0;
    if (!r.u8(version, "version")) return false;
    if (version == 0) return r.fail_at(at, "version", "0 is not a version");
    if (!m.versions.empty() && version <= m.versions.back()) {
      return r.fail_at(at, "version", "versions are not strictly ascending");
    }
    m.versions.push_back(version);
  }
  return true;
}

bool decode_heartbeat(Reader& r, Heartbeat& m) { return r.u64(m.term, "term") && r.u64(m.sequence, "sequence"); }
bool decode_heartbeat_ack(Reader& r, HeartbeatAck& m) { return r.u64(m.sequence, "sequence"); }
bool decode_redirect(Reader& r, Redirect& m) {
  return r.text(m.leader_id, "leader_id", Text::id) && r.text(m.leader_mesh_addr, "leader_mesh_addr", Text::address);
}

template <typename T, typename Decode>
bool decode_as(Reader& r, Message& out, Decode decode) {
  T& message = out.emplace<T>();
  return decode(r, message) && r.end();
}

// `type` was checked against the known types when its header byte arrived.
bool decode_body(uint8_t type, std::string_view body, uint64_t base, Message& out, FrameError& error) {
  const auto message_type = static_cast<MessageType>(type);
  Reader r(body, base, to_string(message_type), error);
  switch (message_type) {
    case MessageType::hello:
      return decode_as<Hello>(r, out, decode_hello);
    case MessageType::hello_ack:
      return decode_as<HelloAck>(r, out, decode_hello_ack);
    case MessageType::join:
      return decode_as<Join>(r, out, decode_join);
    case MessageType::accepted:
      return decode_as<Accepted>(r, out, decode_accepted);
    case MessageType::rejected:
      return decode_as<Rejected>(r, out, decode_rejected);
    case MessageType::versions:
      return decode_as<Versions>(r, out, decode_versions);
    case MessageType::heartbeat:
      return decode_as<Heartbeat>(r, out, decode_heartbeat);
    case MessageType::heartbeat_ack:
      return decode_as<HeartbeatAck>(r, out, decode_heartbeat_ack);
    case MessageType::redirect:
      return decode_as<Redirect>(r, out, decode_redirect);
  }
  return r.fail_at(0, nullptr, "unknown message type");
}

bool known_type(uint8_t type) {
  return type >= static_cast<uint8_t>(MessageType::hello) && type <= static_cast<uint8_t>(MessageType::redirect);
}

// ---- encoding -----------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::string_view message) : message_(message) {}

  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) {
    u8(static_cast<uint8_t>(v >> 8));
    u8(static_cast<uint8_t>(v));
  }
  void u32(uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) u8(static_cast<uint8_t>(v >> shift));
  }
  void u64(uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) u8(static_cast<uint8_t>(v >> shift));
  }
  void text(std::string_view value, const char* field, Text kind) {
    if (std::string problem = text_problem(value, kind); !problem.empty()) invalid(field, problem);
    u16(static_cast<uint16_t>(value.size()));
    out_.append(value);
  }
  [[noreturn]] void invalid(const char* field, const std::string& problem) const {
    throw std::invalid_argument("mesh encode: " + std::string(message_) + "." + field + ": " + problem);
  }
  std::string& out() { return out_; }

 private:
  std::string_view message_;
  std::string out_;
};

void encode_body(Writer& w, const Hello& m) {
  if (m.min_version == 0 || m.max_version < m.min_version) w.invalid("min_version", "not a version range");
  w.u8(m.min_version);
  w.u8(m.max_version);
  w.text(m.node_id, "node_id", Text::id);
  w.text(m.cluster_id, "cluster_id", Text::id);
}
void encode_body(Writer& w, const HelloAck& m) {
  if (m.version == 0) w.invalid("version", "0 is not a version");
  w.u8(m.version);
  w.text(m.node_id, "node_id", Text::id);
  w.text(m.cluster_id, "cluster_id", Text::id);
}
void encode_body(Writer& w, const Join& m) {
  w.text(m.raft_addr, "raft_addr", Text::address);
  w.text(m.token, "token", Text::token);
  if (m.mesh_addr.empty() && m.admin_addr.empty()) return;
  w.text(m.mesh_addr, "mesh_addr", Text::address);
  w.text(m.admin_addr, "admin_addr", Text::address);
}
void encode_body(Writer& w, const Accepted& m) {
  w.text(m.leader_id, "leader_id", Text::id);
  if (m.members.size() > kMaxMembers) w.invalid("members", std::to_string(m.members.size()) + " members");
  w.u16(static_cast<uint16_t>(m.members.size()));
  for (const Member& member : m.members) {
    w.text(member.id, "members.id", Text::id);
    w.text(member.mesh_addr, "members.mesh_addr", Text::address);
    w.text(member.raft_addr, "members.raft_addr", Text::address);
    w.u8(member.voter ? 1 : 0);
  }
}
void encode_body(Writer& w, const Rejected& m) {
  w.text(m.reason, "reason", Text::reason);
  w.text(m.detail, "detail", Text::detail);
}
void encode_body(Writer& w, const Versions& m) {
  if (m.versions.empty() || m.versions.size() > 255) w.invalid("versions", "needs 1 to 255 versions");
  for (size_t i = 0; i < m.versions.size(); ++i) {
    if (m.versions[i] == 0 || (i > 0 && m.versions[i] <= m.versions[i - 1])) {
      w.invalid("versions", "must be non-zero and strictly ascending");
    }
  }
  w.u8(static_cast<uint8_t>(m.versions.size()));
  for (uint8_t v : m.versions) w.u8(v);
}
void encode_body(Writer& w, const Heartbeat& m) {
  w.u64(m.term);
  w.u64(m.sequence);
}
void encode_body(Writer& w, const HeartbeatAck& m) { w.u64(m.sequence); }
void encode_body(Writer& w, const Redirect& m) {
  w.text(m.leader_id, "leader_id", Text::id);
  w.text(m.leader_mesh_addr, "leader_mesh_addr", Text::address);
}

}  // namespace

// ---- public functions -----------------------------------------------------------

std::string_view to_string(ProtocolError error) {
  switch (error) {
    case ProtocolError::bad_magic:
      return "bad_magic";
    case ProtocolError::unsupported_version:
      return "unsupported_version";
    case ProtocolError::frame_too_large:
      return "frame_too_large";
    case ProtocolError::truncated:
      return "truncated";
    case ProtocolError::malformed_payload:
      return "malformed_payload";
    case ProtocolError::unexpected_message:
      return "unexpected_message";
  }
  return "unknown";
}

std::string_view to_string(MessageType type) {
  switch (type) {
    case MessageType::hello:
      return "hello";
    case MessageType::hello_ack:
      return "hello_ack";
    case MessageType::join:
      return "join";
    case MessageType::accepted:
      return "accepted";
    case MessageType::rejected:
      return "rejected";
    case MessageType::versions:
      return "versions";
    case MessageType::heartbeat:
      return "heartbeat";
    case MessageType::heartbeat_ack:
      return "heartbeat_ack";
    case MessageType::redirect:
      return "redirect";
  }
  return "unknown";
}

MessageType type_of(const Message& message) { return static_cast<MessageType>(message.index() + 1); }

std::string encode(const Message& message, uint8_t version) {
  Writer w(to_string(type_of(message)));
  std::string& out = w.out();
  out.reserve(64);
  out.append(reinterpret_cast<const char*>(kMagic.data()), kMagic.size());
  w.u8(version);
  w.u8(static_cast<uint8_t>(type_of(message)));
  w.u16(0);  // flags
  w.u32(0);  // length, patched below
  std::visit([&w](const auto& m) { encode_body(w, m); }, message);
  // The largest body the limits allow (256 members of maximum size) is far
  // below 4 GiB, so the length always fits.
  const auto length = static_cast<uint32_t>(out.size() - kHeaderBytes);
  for (size_t i = 0; i < 4; ++i) out[8 + i] = static_cast<char>(length >> (24 - 8 * i));
  return std::move(out);
}

std::optional<Message> error_reply(const FrameError& error) {
  switch (error.error) {
    case ProtocolError::bad_magic:
    case ProtocolError::unsupported_version:
      return Versions{{kSupportedVersions.begin(), kSupportedVersions.end()}};
    case ProtocolError::frame_too_large:
    case ProtocolError::malformed_payload:
    case ProtocolError::unexpected_message: {
      std::string detail = "offset " + std::to_string(error.offset) + ": " + error.detail;
      if (invalid_utf8_at(detail) != std::string_view::npos) detail = "offset " + std::to_string(error.offset);
      return Rejected{std::string(to_string(error.error)), clip_detail(std::move(detail))};
    }
    case ProtocolError::truncated:
      break;
  }
  return std::nullopt;
}

std::optional<uint8_t> negotiate_version(uint8_t min_version, uint8_t max_version,
                                         const std::vector<uint8_t>& supported) {
  for (auto it = supported.rbegin(); it != supported.rend(); ++it) {
    if (*it >= min_version && *it <= max_version) return *it;
  }
  return std::nullopt;
}

// ---- FrameParser ----------------------------------------------------------------

FrameParser::FrameParser(uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

bool FrameParser::fail(ProtocolError error, uint64_t offset, std::string detail) {
  failed_ = true;
  error_.error = error;
  error_.offset = offset;
  error_.detail = std::move(detail);
  // The version byte belongs to the failing frame only once it has arrived.
  error_.peer_version = header_have_ > 4 ? std::optional<uint8_t>(header_[4]) : std::nullopt;
  return false;
}

ParseResult FrameParser::error_result(size_t consumed) const {
  ParseResult result;
  result.status = ParseResult::Status::error;
  result.consumed = consumed;
  result.error = error_;
  return result;
}

// Called as each header byte arrives: a field is judged the moment it is
// complete, so a peer speaking another protocol is refused on its first wrong
// byte and an oversized length is refused before any body byte is kept.
bool FrameParser::check_header_byte(size_t index) {
  const uint8_t b = header_[index];
  const uint64_t at = frame_start_ + index;
  if (index < 4) {
    if (b != kMagic[index]) {
      return fail(ProtocolError::bad_magic, at,
                  "byte " + hex_byte(b) + " where the magic \"ZCTL\" has " + hex_byte(kMagic[index]));
    }
  } else if (index == 4) {
    peer_version_ = b;
    if (std::find(kSupportedVersions.begin(), kSupportedVersions.end(), b) == kSupportedVersions.end()) {
      return fail(ProtocolError::unsupported_version, at,
                  "version " + std::to_string(b) + "; this node speaks " + version_list(kSupportedVersions));
    }
  } else if (index == 5) {
    if (!known_type(b)) return fail(ProtocolError::malformed_payload, at, "unknown message type " + std::to_string(b));
  } else if (index == 7) {
    const unsigned flags = static_cast<unsigned>(header_[6]) << 8 | header_[7];
    if (flags != 0) {
      return fail(ProtocolError::malformed_payload, at - 1,
                  "flags " + std::to_string(flags) + "; version 1 defines none");
    }
  } else if (index == 11) {
    body_length_ = static_cast<uint32_t>(header_[8]) << 24 | static_cast<uint32_t>(header_[9]) << 16 |
                   static_cast<uint32_t>(header_[10]) << 8 | header_[11];
    const uint64_t frame_bytes = uint64_t{kHeaderBytes} + body_length_;
    if (frame_bytes > max_frame_bytes_) {
      return fail(ProtocolError::frame_too_large, at - 3,
                  "a frame of " + std::to_string(frame_bytes) + " bytes exceeds the limit of " +
                      std::to_string(max_frame_bytes_));
    }
  }
  return true;
}

ParseResult FrameParser::finish_frame(std::string_view body, size_t consumed) {
  ParseResult result;
  if (!decode_body(header_[5], body, frame_start_ + kHeaderBytes, result.frame.message, error_)) {
    fail(error_.error, error_.offset, std::move(error_.detail));
    return error_result(consumed);
  }
  result.status = ParseResult::Status::frame;
  result.consumed = consumed;
  result.frame.version = header_[4];
  result.frame.offset = frame_start_;
  header_have_ = 0;
  body_.clear();
  // A session that once received a large frame should not keep its buffer.
  if (body_.capacity() > 4096) std::string().swap(body_);
  return result;
}

ParseResult FrameParser::feed(std::string_view input) {
  if (failed_) return error_result(0);
  size_t used = 0;
  while (header_have_ < kHeaderBytes) {
    if (used == input.size()) {
      ParseResult result;
      result.consumed = used;
      return result;
    }
    if (header_have_ == 0) frame_start_ = consumed_;
    header_[header_have_] = static_cast<uint8_t>(input[used++]);
    ++consumed_;
    if (!check_header_byte(header_have_++)) return error_result(used);
  }

  const size_t available = input.size() - used;
  if (body_.empty() && available >= body_length_) {
    // The whole body is in this input: decode it in place, no copy.
    const std::string_view body = input.substr(used, body_length_);
    used += body_length_;
    consumed_ += body_length_;
    return finish_frame(body, used);
  }
  // Grown as bytes arrive rather than reserved from the length field: many
  // pending peers each announcing a maximal frame must not cost memory they
  // never send.
  const size_t take = std::min<size_t>(body_length_ - body_.size(), available);
  body_.append(input.data() + used, take);
  used += take;
  consumed_ += take;
  if (body_.size() < body_length_) {
    ParseResult result;
    result.consumed = used;
    return result;
  }
  return finish_frame(body_, used);
}

std::optional<FrameError> FrameParser::finish() {
  if (failed_) return error_;
  if (header_have_ == 0) return std::nullopt;
  std::string detail = header_have_ < kHeaderBytes
                           ? "the peer closed the connection after " + std::to_string(header_have_) + " of the " +
                                 std::to_string(kHeaderBytes) + " header bytes"
                           : "the peer closed the connection after " + std::to_string(body_.size()) + " of the " +
                                 std::to_string(body_length_) + " body bytes";
  fail(ProtocolError::truncated, frame_start_, std::move(detail));
  return error_;
}

// ---- HandshakeMachine -------------------------------------------------------------

HandshakeMachine::HandshakeMachine(std::string local_node_id, std::string cluster_id,
                                   std::vector<uint8_t> supported_versions)
    : local_node_id_(std::move(local_node_id)),
      cluster_id_(std::move(cluster_id)),
      supported_(std::move(supported_versions)) {
  if (std::string problem = text_problem(local_node_id_, Text::id); !problem.empty()) {
    throw std::invalid_argument("mesh handshake: node id '" + local_node_id_ + "' " + problem);
  }
  if (std::string problem = text_problem(cluster_id_, Text::id); !problem.empty()) {
    throw std::invalid_argument("mesh handshake: cluster id '" + cluster_id_ + "' " + problem);
  }
  if (supported_.empty() || !std::is_sorted(supported_.begin(), supported_.end())) {
    throw std::invalid_argument("mesh handshake: supported versions must be a non-empty ascending list");
  }
}

std::string_view HandshakeMachine::pending_step() const {
  switch (state_) {
    case State::awaiting_hello:
      return "hello";
    case State::awaiting_join:
      return "join";
    case State::awaiting_membership:
      return "membership";
    case State::joined:
    case State::closed:
      break;
  }
  return {};
}

HandshakeOutcome HandshakeMachine::fail(ProtocolError error, const Frame& frame, uint64_t offset, std::string detail) {
  state_ = State::closed;
  HandshakeOutcome outcome;
  outcome.kind = HandshakeOutcome::Kind::protocol_error;
  FrameError frame_error;
  frame_error.error = error;
  frame_error.offset = offset;
  frame_error.detail = std::move(detail);
  frame_error.peer_version = frame.version;
  if (error == ProtocolError::unsupported_version) {
    outcome.reply = Versions{supported_};
  } else {
    outcome.reply = error_reply(frame_error);
  }
  outcome.error = std::move(frame_error);
  return outcome;
}

HandshakeOutcome HandshakeMachine::on_frame(const Frame& frame) {
  const MessageType type = type_of(frame.message);
  const uint64_t type_at = frame.offset + 5;
  const auto unexpected = [&](std::string_view expected) {
    return fail(ProtocolError::unexpected_message, frame, type_at,
                std::string(to_string(type)) + " frame " + std::string(expected));
  };
  if (state_ == State::closed) return unexpected("after the session ended");
  if (version_ && frame.version != *version_) {
    return fail(ProtocolError::unsupported_version, frame, frame.offset + 4,
                "a version " + std::to_string(frame.version) + " frame on a session that negotiated version " +
                    std::to_string(*version_));
  }

  HandshakeOutcome outcome;
  switch (state_) {
    case State::awaiting_hello: {
      const Hello* hello = std::get_if<Hello>(&frame.message);
      if (hello == nullptr) return unexpected("where a hello was expected");
      peer_node_id_ = hello->node_id;
      const std::optional<uint8_t> version = negotiate_version(hello->min_version, hello->max_version, supported_);
      if (!version) {
        return fail(ProtocolError::unsupported_version, frame, frame.offset + kHeaderBytes,
                    "the peer speaks versions " + std::to_string(hello->min_version) + " to " +
                        std::to_string(hello->max_version) + "; this node speaks " + version_list(supported_));
      }
      if (hello->cluster_id != cluster_id_) {
        outcome.kind = HandshakeOutcome::Kind::rejected;
        outcome.reply = reject("wrong_cluster", "the hello names cluster '" + hello->cluster_id +
                                                    "'; this node belongs to another cluster");
        return outcome;
      }
      if (hello->node_id == local_node_id_) {
        outcome.kind = HandshakeOutcome::Kind::rejected;
        outcome.reply = reject("duplicate_id", "the hello names this node's own id '" + hello->node_id + "'");
        return outcome;
      }
      version_ = version;
      state_ = State::awaiting_join;
      outcome.kind = HandshakeOutcome::Kind::reply;
      outcome.reply = HelloAck{*version, local_node_id_, cluster_id_};
      return outcome;
    }
    case State::awaiting_join: {
      const Join* join = std::get_if<Join>(&frame.message);
      if (join == nullptr) return unexpected("where a join was expected");
      join_ = *join;
      state_ = State::awaiting_membership;
      outcome.kind = HandshakeOutcome::Kind::decide;
      return outcome;
    }
    case State::awaiting_membership:
      return unexpected("while the join is being decided");
    case State::joined:
      if (const auto* heartbeat = std::get_if<Heartbeat>(&frame.message)) {
        outcome.kind = HandshakeOutcome::Kind::reply;
        outcome.reply = HeartbeatAck{heartbeat->sequence};
        return outcome;
      }
      if (std::holds_alternative<HeartbeatAck>(frame.message)) return outcome;
      return unexpected("on a joined session");
    case State::closed:
      break;
  }
  return unexpected("after the session ended");
}

Message HandshakeMachine::accept(Accepted accepted) {
  if (state_ != State::awaiting_membership) throw std::logic_error("mesh handshake: accept() before a join");
  state_ = State::joined;
  return accepted;
}

Message HandshakeMachine::reject(std::string reason, std::string detail) {
  if (state_ == State::joined || state_ == State::closed) {
    throw std::logic_error("mesh handshake: reject() on a session that is joined or closed");
  }
  if (std::string problem = text_problem(reason, Text::reason); !problem.empty()) {
    throw std::invalid_argument("mesh handshake: reject reason '" + reason + "' " + problem);
  }
  state_ = State::closed;
  detail = clip_detail(std::move(detail));
  if (invalid_utf8_at(detail) != std::string_view::npos) detail.clear();
  return Rejected{std::move(reason), std::move(detail)};
}

Message HandshakeMachine::redirect(Redirect redirect) {
  if (state_ != State::awaiting_membership) throw std::logic_error("mesh handshake: redirect() before a join");
  state_ = State::closed;
  return redirect;
}

ClientHandshake::ClientHandshake(std::string node_id, std::string cluster_id, Join join, std::string expected_peer)
    : node_id_(std::move(node_id)), cluster_id_(std::move(cluster_id)), join_(std::move(join)),
      expected_peer_(std::move(expected_peer)) {}

std::string ClientHandshake::hello_frame() const {
  return encode(Hello{kLowestVersion, kSupportedVersions.back(), node_id_, cluster_id_});
}

ClientStep ClientHandshake::on_message(const Message& message) {
  ClientStep step;
  const auto fail = [&step](std::string detail) {
    step.kind = ClientStep::Kind::failed;
    step.detail = std::move(detail);
    return step;
  };
  switch (type_of(message)) {
    case MessageType::hello_ack: {
      if (version_ != 0) return fail("a second hello_ack");
      const auto& ack = std::get<HelloAck>(message);
      if (ack.cluster_id != cluster_id_) return fail("the node belongs to cluster '" + ack.cluster_id + "'");
      if (!expected_peer_.empty() && ack.node_id != expected_peer_) {
        return fail("the node is " + ack.node_id + ", not " + expected_peer_);
      }
      if (std::find(kSupportedVersions.begin(), kSupportedVersions.end(), ack.version) == kSupportedVersions.end()) {
        return fail("the node chose version " + std::to_string(ack.version) + ", which this build does not speak");
      }
      peer_id_ = ack.node_id;
      version_ = ack.version;
      step.kind = ClientStep::Kind::send;
      step.reply = encode(join_, version_);
      return step;
    }
    case MessageType::accepted:
      if (version_ == 0 || joined_) return fail("an accepted out of order");
      joined_ = true;
      step.kind = ClientStep::Kind::joined;
      return step;
    case MessageType::heartbeat:
      if (!joined_) return fail("a heartbeat before the join was accepted");
      step.kind = ClientStep::Kind::send;
      step.reply = encode(HeartbeatAck{std::get<Heartbeat>(message).sequence}, version_);
      return step;
    case MessageType::heartbeat_ack:
      if (!joined_) return fail("a heartbeat_ack before the join was accepted");
      step.kind = ClientStep::Kind::alive;
      return step;
    case MessageType::redirect:
      if (joined_) return fail("a redirect on a joined session");
      step.kind = ClientStep::Kind::redirect;
      step.redirect = std::get<Redirect>(message);
      step.detail = "leader " + step.redirect.leader_id + " at " + step.redirect.leader_mesh_addr;
      return step;
    case MessageType::rejected:
      step.kind = ClientStep::Kind::rejected;
      step.rejected = std::get<Rejected>(message);
      step.detail = step.rejected.reason + ": " + step.rejected.detail;
      return step;
    case MessageType::versions:
      return fail("the node speaks no protocol version this build speaks");
    default:
      return fail("unexpected " + std::string(to_string(type_of(message))) + " from the node");
  }
}

}  // namespace zctl::mesh
