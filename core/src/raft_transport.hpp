// zctl's TCP transport for libraft's libuv I/O (struct raft_uv_transport),
// a drop-in replacement for raft_uv_tcp that notices dead peers quickly.
//
// Wire format: identical to raft_uv_tcp (libraft 0.15), so nodes using
// either transport talk to each other. Addresses are IPv4 literals
// "a.b.c.d:port", as with the stock transport.
//
// Differences from raft_uv_tcp: every stream (connected and accepted) gets
// TCP_NODELAY, short TCP keepalives and TCP_USER_TIMEOUT, and a connect
// attempt (TCP connect + handshake write) that does not finish within
// connect_timeout_ms fails with RAFT_NOCONNECTION. Without these, a silent
// partition (packets dropped, no RST) leaves raft waiting on the kernel's
// SYN and retransmission timeouts, tens of seconds after the network heals.
//
// Lifecycle:
//   raft_transport_init(&t, loop) -> raft_uv_init(&io, loop, dir, &t) -> ...
//   raft_close(cb) -> in cb: raft_uv_close(&io), raft_transport_close(&t).
// raft_uv drives init/listen/connect/close through the function pointers and
// owns transport->data. raft_transport_close only frees memory: call it after
// the transport's close callback has fired (raft_uv's close callback implies
// it), or if listen/connect were never called.
//
// Threads: none of our own; every function and callback runs on the thread
// that runs `loop`.
//
// Ownership: streams handed to the accept and connect callbacks are
// raft_malloc'ed uv_tcp_t handles; the receiver uv_close()s them and frees
// them with raft_free, as raft_uv does.
#pragma once

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}

namespace zctl {

struct RaftTransportOptions {
  // Abort a connect attempt (TCP connect plus handshake) after this; 0: never.
  unsigned connect_timeout_ms = 1000;
  // TCP_USER_TIMEOUT: data (or keepalive probes) unacknowledged for this long
  // kills the connection; 0: kernel default (minutes).
  unsigned user_timeout_ms = 1500;
  // TCP keepalive idle time and probe interval, so an idle stream to a dead
  // peer is noticed; 0: no keepalive.
  unsigned keepalive_idle_s = 1;
};

// Fills `transport` with zctl's TCP transport on `loop`, keeping
// transport->data. Returns 0, RAFT_NOMEM, or RAFT_INVALID for out-of-range
// options.
int raft_transport_init(struct raft_uv_transport* transport, uv_loop_t* loop, RaftTransportOptions options = {});

// Frees what raft_transport_init allocated; see the lifecycle above.
void raft_transport_close(struct raft_uv_transport* transport);

}  // namespace zctl
