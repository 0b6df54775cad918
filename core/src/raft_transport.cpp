#include "raft_transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace zctl {

namespace {

// Wire format of raft_uv_tcp (libraft 0.15, src/uv_tcp_connect.c and
// src/uv_tcp_listen.c): the connecting side sends three little-endian
// uint64 (protocol version 1, its server id, the length of the address
// buffer), then its own address, NUL-terminated and padded to 8 bytes.
constexpr std::uint64_t kHandshakeProtocol = 1;
constexpr std::size_t kPreambleSize = 3 * sizeof(std::uint64_t);
// The stock listener allocates whatever length the peer announces; a real
// "a.b.c.d:port" needs 24 bytes, so anything this large is garbage.
constexpr std::uint64_t kMaxAddressBuffer = 1024;
// raft_uv_tcp listens with a backlog of 1: when several peers reconnect at
// once after a partition heals, the kernel drops the extra SYNs and those
// peers wait for the SYN retransmission (1 s, then 3 s, ...).
constexpr int kListenBacklog = 64;
// Keepalive probes before the kernel gives up. With TCP_USER_TIMEOUT set, the
// user timeout decides instead (tcp(7)), so this only matters without it.
constexpr int kKeepaliveProbes = 3;
// Linux rejects larger TCP_KEEPIDLE / TCP_KEEPINTVL values (MAX_TCP_KEEPIDLE).
constexpr unsigned kMaxKeepaliveSeconds = 32767;
// Stock default when the address has no port.
constexpr int kDefaultPort = 8080;

std::uint64_t get_le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// Intrusive list: no allocation, so bookkeeping cannot fail halfway through
// an error path.
struct ListNode {
  ListNode* prev = nullptr;
  ListNode* next = nullptr;
};

struct List {
  ListNode head;
  List() { head.prev = head.next = &head; }
  List(const List&) = delete;
  List& operator=(const List&) = delete;
  bool empty() const { return head.next == &head; }
  void push(ListNode* n) {
    n->prev = head.prev;
    n->next = &head;
    head.prev->next = n;
    head.prev = n;
  }
  static void remove(ListNode* n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
};

struct Transport;

struct Connect : ListNode {
  enum class State { connecting, handed_off, aborting };
  Transport* t = nullptr;
  raft_uv_connect* req = nullptr;
  raft_uv_connect_cb cb = nullptr;
  uv_tcp_t* tcp = nullptr;  // raft_malloc'ed: raft owns it once handed off
  uv_connect_t connect{};
  uv_write_t write{};
  uv_timer_t timer{};
  State state = State::connecting;
  int status = 0;          // for the raft callback when aborting
  bool notify = true;      // false when connect() itself reported the failure
  int pending_closes = 0;  // handles of ours still closing
  char peer[64] = {};      // for error messages only
};

struct Incoming : ListNode {
  Transport* t = nullptr;
  uv_tcp_t* tcp = nullptr;  // raft_malloc'ed: raft owns it once accepted
  unsigned char preamble[kPreambleSize] = {};
  char* address = nullptr;  // address_len + 1 bytes, the last one always NUL
  std::size_t address_len = 0;
  std::size_t received = 0;  // bytes of preamble + address so far
  bool aborting = false;
};

struct Transport {
  raft_uv_transport* iface = nullptr;
  uv_loop_t* loop = nullptr;
  RaftTransportOptions options;
  std::string address;
  std::vector<char> handshake;  // encoded once; every connect writes it (uv_write does not copy)
  uv_tcp_t listener{};
  bool listener_open = false;  // initialised and not yet closed
  raft_uv_accept_cb accept_cb = nullptr;
  List connects;   // every Connect until its handles are closed
  List incomings;  // every Incoming until accepted or closed
  bool closing = false;
  bool close_fired = false;
  raft_uv_transport_close_cb close_cb = nullptr;
  // >0 while a raft callback runs: raft may call back into us (even close())
  // and the close callback, after which the memory may be freed, must wait
  // until we have stopped touching it.
  int dispatching = 0;
};

Transport* impl(raft_uv_transport* iface) { return static_cast<Transport*>(iface->impl); }

__attribute__((format(printf, 2, 3))) void set_errmsg(Transport* t, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(t->iface->errmsg, RAFT_ERRMSG_BUF_SIZE, fmt, args);
  va_end(args);
}

void maybe_fire_close(Transport* t) {
  if (!t->closing || t->close_fired || t->dispatching > 0) return;
  if (!t->connects.empty() || !t->incomings.empty() || t->listener_open) return;
  t->close_fired = true;
  if (t->close_cb != nullptr) t->close_cb(t->iface);
}

// Same grammar as the stock transport's uvIpParse, minus its quirks: an IPv4
// literal, then optionally ":port".
bool parse_address(const char* address, sockaddr_in* addr) {
  if (address == nullptr) return false;
  const char* colon = std::strchr(address, ':');
  const std::size_t host_len = colon != nullptr ? static_cast<std::size_t>(colon - address) : std::strlen(address);
  char host[INET_ADDRSTRLEN];
  if (host_len >= sizeof host) return false;
  std::memcpy(host, address, host_len);
  host[host_len] = '\0';
  long port = kDefaultPort;
  if (colon != nullptr) {
    const char* digits = colon + 1;
    if (*digits == '\0' || std::strlen(digits) > 5) return false;
    for (const char* p = digits; *p; ++p)
      if (*p < '0' || *p > '9') return false;
    port = std::strtol(digits, nullptr, 10);
    if (port > 65535) return false;
  }
  return uv_ip4_addr(host, static_cast<int>(port), addr) == 0;
}

// Returns 0 or a negative errno; *what names the option that failed.
int apply_socket_options(uv_tcp_t* tcp, const RaftTransportOptions& o, const char** what) {
  uv_os_fd_t fd;
  *what = "fileno";
  int rv = uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd);
  if (rv != 0) return rv;
  // Raft messages are small and latency-bound (heartbeats, votes): Nagle
  // would hold them behind an unacknowledged segment.
  *what = "TCP_NODELAY";
  rv = uv_tcp_nodelay(tcp, 1);
  if (rv != 0) return rv;
  if (o.keepalive_idle_s > 0) {
    // A stream nobody writes to (raft reads inbound streams only) never
    // notices a vanished peer without keepalive probes.
    *what = "SO_KEEPALIVE";
    rv = uv_tcp_keepalive(tcp, 1, o.keepalive_idle_s);
    if (rv != 0) return rv;
    const int interval = static_cast<int>(o.keepalive_idle_s);
    *what = "TCP_KEEPINTVL";
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) != 0) return -errno;
    *what = "TCP_KEEPCNT";
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepaliveProbes, sizeof kKeepaliveProbes) != 0) return -errno;
  }
  if (o.user_timeout_ms > 0) {
    // Without it a write into a silent partition is retransmitted for ~15
    // minutes before raft hears of an error and reconnects.
    const unsigned timeout = o.user_timeout_ms;
    *what = "TCP_USER_TIMEOUT";
    if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout) != 0) return -errno;
  }
  return 0;
}

// ---------------------------------------------------------------- connecting

void on_connect_handle_closed(uv_handle_t* handle) {
  auto* c = static_cast<Connect*>(handle->data);
  if (--c->pending_closes > 0) return;
  Transport* t = c->t;
  raft_uv_connect* req = c->req;
  const raft_uv_connect_cb cb = c->cb;
  const int status = c->status;
  const bool notify = c->state == Connect::State::aborting && c->notify;
  if (c->tcp != nullptr) raft_free(c->tcp);  // never handed to raft
  List::remove(c);
  delete c;
  if (notify) {
    // Like raft_uv_tcp, fire the callback only once the handle is closed:
    // raft may release `req` (and its client) from inside it.
    ++t->dispatching;
    cb(req, nullptr, status);
    --t->dispatching;
  }
  maybe_fire_close(t);
}

void abort_connect(Connect* c, int status) {
  c->state = Connect::State::aborting;
  c->status = status;
  c->pending_closes = 2;
  // Closing the TCP handle cancels a pending connect or write (their
  // callbacks see UV_ECANCELED and return); closing the timer stops it.
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_connect_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(c->tcp), on_connect_handle_closed);
}

void on_connect_timeout(uv_timer_t* timer) {
  auto* c = static_cast<Connect*>(timer->data);
  set_errmsg(c->t, "connect to %s: no handshake within %u ms", c->peer, c->t->options.connect_timeout_ms);
  abort_connect(c, RAFT_NOCONNECTION);
}

void on_handshake_written(uv_write_t* write, int status) {
  auto* c = static_cast<Connect*>(write->data);
  if (c->state != Connect::State::connecting) return;  // aborted: the close callbacks finish it
  Transport* t = c->t;
  if (status != 0) {
    set_errmsg(t, "connect to %s: handshake: %s", c->peer, uv_strerror(status));
    abort_connect(c, RAFT_NOCONNECTION);
    return;
  }
  uv_timer_stop(&c->timer);
  c->state = Connect::State::handed_off;
  auto* stream = reinterpret_cast<uv_stream_t*>(c->tcp);
  stream->data = nullptr;  // raft's from now on
  c->tcp = nullptr;
  raft_uv_connect* req = c->req;
  const raft_uv_connect_cb cb = c->cb;
  // The timer lives inside the request, so the request lives until the timer
  // is closed; the stream is raft's right away.
  c->pending_closes = 1;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_connect_handle_closed);
  ++t->dispatching;
  cb(req, stream, 0);
  --t->dispatching;
  maybe_fire_close(t);
}

void on_connected(uv_connect_t* connect, int status) {
  auto* c = static_cast<Connect*>(connect->data);
  if (c->state != Connect::State::connecting) return;
  Transport* t = c->t;
  if (status != 0) {
    set_errmsg(t, "connect to %s: %s", c->peer, uv_strerror(status));
    abort_connect(c, RAFT_NOCONNECTION);
    return;
  }
  uv_buf_t buf = uv_buf_init(t->handshake.data(), static_cast<unsigned>(t->handshake.size()));
  c->write.data = c;
  const int rv = uv_write(&c->write, reinterpret_cast<uv_stream_t*>(c->tcp), &buf, 1, on_handshake_written);
  if (rv != 0) {
    set_errmsg(t, "connect to %s: handshake: %s", c->peer, uv_strerror(rv));
    abort_connect(c, RAFT_NOCONNECTION);
  }
}

int transport_connect(raft_uv_transport* iface, raft_uv_connect* req, raft_id id, const char* address,
                      raft_uv_connect_cb cb) {
  (void)id;  // the stock transport ignores it too: the handshake carries our id, not theirs
  Transport* t = impl(iface);
  if (t->closing) {
    set_errmsg(t, "transport is closing");
    return RAFT_CANCELED;
  }
  if (t->handshake.empty()) {
    set_errmsg(t, "connect before init");
    return RAFT_INVALID;
  }
  sockaddr_in addr{};
  if (!parse_address(address, &addr)) {
    set_errmsg(t, "connect: not an IPv4 address:port: %s", address ? address : "(null)");
    return RAFT_NOCONNECTION;  // what raft_uv_tcp returns; raft retries later
  }

  auto* c = new (std::nothrow) Connect;
  if (c == nullptr) {
    set_errmsg(t, "out of memory");
    return RAFT_NOMEM;
  }
  c->tcp = static_cast<uv_tcp_t*>(raft_malloc(sizeof(uv_tcp_t)));
  if (c->tcp == nullptr) {
    delete c;
    set_errmsg(t, "out of memory");
    return RAFT_NOMEM;
  }
  // The socket must exist before connect so its options cover the SYN too.
  int rv = uv_tcp_init_ex(t->loop, c->tcp, AF_INET);
  if (rv != 0) {
    set_errmsg(t, "connect to %s: socket: %s", address, uv_strerror(rv));
    raft_free(c->tcp);
    delete c;
    return RAFT_NOCONNECTION;
  }
  c->t = t;
  c->req = req;
  c->cb = cb;
  c->tcp->data = c;
  c->connect.data = c;
  std::snprintf(c->peer, sizeof c->peer, "%s", address);
  uv_timer_init(t->loop, &c->timer);  // cannot fail
  c->timer.data = c;
  t->connects.push(c);
  req->cb = cb;

  const char* what = nullptr;
  rv = apply_socket_options(c->tcp, t->options, &what);
  if (rv != 0) {
    set_errmsg(t, "connect to %s: %s: %s", address, what, uv_strerror(rv));
  } else {
    rv = uv_tcp_connect(&c->connect, c->tcp, reinterpret_cast<const sockaddr*>(&addr), on_connected);
    if (rv != 0) set_errmsg(t, "connect to %s: %s", address, uv_strerror(rv));
  }
  if (rv != 0) {
    // Reported through the return value, so no callback; the handles still
    // close asynchronously and the transport's close waits for them.
    c->notify = false;
    abort_connect(c, RAFT_NOCONNECTION);
    return RAFT_NOCONNECTION;
  }
  if (t->options.connect_timeout_ms > 0)
    uv_timer_start(&c->timer, on_connect_timeout, t->options.connect_timeout_ms, 0);
  return 0;
}

// ----------------------------------------------------------------- listening

void on_incoming_closed(uv_handle_t* handle) {
  auto* in = static_cast<Incoming*>(handle->data);
  Transport* t = in->t;
  raft_free(in->tcp);
  delete[] in->address;
  List::remove(in);
  delete in;
  maybe_fire_close(t);
}

void abort_incoming(Incoming* in) {
  in->aborting = true;
  uv_close(reinterpret_cast<uv_handle_t*>(in->tcp), on_incoming_closed);
}

// Buffers are sized to exactly the handshake bytes still missing, so nothing
// raft's own reader should see is consumed here.
void incoming_alloc(uv_handle_t* handle, std::size_t /*suggested*/, uv_buf_t* buf) {
  auto* in = static_cast<Incoming*>(handle->data);
  if (in->received < kPreambleSize) {
    buf->base = reinterpret_cast<char*>(in->preamble) + in->received;
    buf->len = kPreambleSize - in->received;
  } else {
    const std::size_t done = in->received - kPreambleSize;
    buf->base = in->address + done;
    buf->len = in->address_len - done;
  }
}

void incoming_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* /*buf*/) {
  auto* in = static_cast<Incoming*>(stream->data);
  if (nread == 0) return;  // EAGAIN
  if (nread < 0) {         // EOF, reset, ETIMEDOUT from keepalive...
    abort_incoming(in);
    return;
  }
  in->received += static_cast<std::size_t>(nread);
  Transport* t = in->t;
  if (in->received == kPreambleSize) {
    const std::uint64_t protocol = get_le64(in->preamble);
    const std::uint64_t length = get_le64(in->preamble + 16);
    if (protocol != kHandshakeProtocol || length == 0 || length > kMaxAddressBuffer) {
      set_errmsg(t, "incoming handshake: protocol %llu, address length %llu", static_cast<unsigned long long>(protocol),
                 static_cast<unsigned long long>(length));
      abort_incoming(in);
      return;
    }
    in->address_len = static_cast<std::size_t>(length);
    in->address = new (std::nothrow) char[in->address_len + 1];
    if (in->address == nullptr) {
      abort_incoming(in);
      return;
    }
    // The peer's padding is not necessarily zeroed (raft_uv_tcp mallocs it);
    // the extra byte guarantees termination whatever it sends.
    in->address[in->address_len] = '\0';
    return;
  }
  if (in->received < kPreambleSize + in->address_len) return;

  uv_read_stop(stream);
  List::remove(in);
  const raft_id id = get_le64(in->preamble + 8);
  char* address = in->address;
  stream->data = nullptr;  // raft's from now on
  delete in;
  ++t->dispatching;
  t->accept_cb(t->iface, id, address, stream);
  --t->dispatching;
  delete[] address;  // raft copies it (uv.h: no references kept)
  maybe_fire_close(t);
}

void on_new_connection(uv_stream_t* server, int status) {
  auto* t = static_cast<Transport*>(server->data);
  if (status != 0) {
    // EMFILE and the like: libuv keeps listening, raft will retry.
    set_errmsg(t, "accept: %s", uv_strerror(status));
    return;
  }
  auto* in = new (std::nothrow) Incoming;
  auto* tcp = static_cast<uv_tcp_t*>(raft_malloc(sizeof(uv_tcp_t)));
  if (in == nullptr || tcp == nullptr) {
    // Without uv_accept libuv pauses the listener until one succeeds; the
    // next connection attempt after memory frees up gets it going again.
    delete in;
    raft_free(tcp);
    set_errmsg(t, "accept: out of memory");
    return;
  }
  in->t = t;
  in->tcp = tcp;
  uv_tcp_init(t->loop, tcp);  // no socket yet (AF_UNSPEC), cannot fail
  tcp->data = in;
  t->incomings.push(in);
  int rv = uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp));
  const char* what = "accept";
  if (rv == 0) rv = apply_socket_options(tcp, t->options, &what);
  if (rv == 0) {
    what = "read";
    rv = uv_read_start(reinterpret_cast<uv_stream_t*>(tcp), incoming_alloc, incoming_read);
  }
  if (rv != 0) {
    set_errmsg(t, "incoming connection: %s: %s", what, uv_strerror(rv));
    abort_incoming(in);
  }
}

int transport_listen(raft_uv_transport* iface, raft_uv_accept_cb cb) {
  Transport* t = impl(iface);
  if (t->closing) {
    set_errmsg(t, "transport is closing");
    return RAFT_CANCELED;
  }
  if (t->listener_open) {
    set_errmsg(t, "already listening");
    return RAFT_INVALID;
  }
  sockaddr_in addr{};
  if (!parse_address(t->address.c_str(), &addr)) {
    set_errmsg(t, "listen: not an IPv4 address:port: %s", t->address.c_str());
    return RAFT_INVALID;
  }
  int rv = uv_tcp_init_ex(t->loop, &t->listener, AF_INET);
  if (rv != 0) {
    set_errmsg(t, "listen on %s: socket: %s", t->address.c_str(), uv_strerror(rv));
    return RAFT_IOERR;
  }
  // From here the handle is in the loop: close() releases it, also when
  // bind or listen fail below (raft closes the transport after a failed start).
  t->listener_open = true;
  t->listener.data = t;
  t->accept_cb = cb;
  rv = uv_tcp_bind(&t->listener, reinterpret_cast<const sockaddr*>(&addr), 0);
  const char* what = "bind";
  if (rv == 0) {
    what = "listen";
    rv = uv_listen(reinterpret_cast<uv_stream_t*>(&t->listener), kListenBacklog, on_new_connection);
  }
  if (rv != 0) {
    set_errmsg(t, "%s on %s: %s", what, t->address.c_str(), uv_strerror(rv));
    return RAFT_IOERR;
  }
  return 0;
}

// ------------------------------------------------------------------ lifecycle

int transport_init_identity(raft_uv_transport* iface, raft_id id, const char* address) {
  Transport* t = impl(iface);
  if (address == nullptr) {
    set_errmsg(t, "no address");
    return RAFT_INVALID;
  }
  try {
    const std::size_t len = std::strlen(address) + 1;
    const std::size_t padded = (len + 7) / 8 * 8;
    std::vector<char> handshake(kPreambleSize + padded, '\0');
    put_le64(handshake.data(), kHandshakeProtocol);
    put_le64(handshake.data() + 8, id);
    put_le64(handshake.data() + 16, padded);
    std::memcpy(handshake.data() + kPreambleSize, address, len);
    t->address = address;  // raft_uv_tcp keeps the pointer; a copy is safer
    t->handshake = std::move(handshake);
  } catch (const std::bad_alloc&) {
    set_errmsg(t, "out of memory");
    return RAFT_NOMEM;
  }
  return 0;
}

void transport_close(raft_uv_transport* iface, raft_uv_transport_close_cb cb) {
  Transport* t = impl(iface);
  if (t->closing) return;  // raft closes once; a second call keeps the first callback
  t->closing = true;
  t->close_cb = cb;
  for (ListNode* n = t->incomings.head.next; n != &t->incomings.head; n = n->next) {
    auto* in = static_cast<Incoming*>(n);
    if (!in->aborting) abort_incoming(in);
  }
  for (ListNode* n = t->connects.head.next; n != &t->connects.head; n = n->next) {
    auto* c = static_cast<Connect*>(n);
    if (c->state == Connect::State::connecting) abort_connect(c, RAFT_CANCELED);
  }
  if (t->listener_open) {
    uv_close(reinterpret_cast<uv_handle_t*>(&t->listener), [](uv_handle_t* handle) {
      auto* owner = static_cast<Transport*>(handle->data);
      owner->listener_open = false;
      maybe_fire_close(owner);
    });
  }
  maybe_fire_close(t);
}

}  // namespace

int raft_transport_init(raft_uv_transport* transport, uv_loop_t* loop, RaftTransportOptions options) {
  void* data = transport->data;
  std::memset(static_cast<void*>(transport), 0, sizeof *transport);
  transport->data = data;
  if (options.keepalive_idle_s > kMaxKeepaliveSeconds || options.user_timeout_ms > INT_MAX) {
    std::snprintf(transport->errmsg, RAFT_ERRMSG_BUF_SIZE, "transport options out of range");
    return RAFT_INVALID;
  }
  auto* t = new (std::nothrow) Transport;
  if (t == nullptr) {
    std::snprintf(transport->errmsg, RAFT_ERRMSG_BUF_SIZE, "out of memory");
    return RAFT_NOMEM;
  }
  t->iface = transport;
  t->loop = loop;
  t->options = options;
  transport->impl = t;
  transport->init = transport_init_identity;
  transport->listen = transport_listen;
  transport->connect = transport_connect;
  transport->close = transport_close;
  return 0;
}

void raft_transport_close(raft_uv_transport* transport) {
  delete impl(transport);
  transport->impl = nullptr;
}

}  // namespace zctl
