#!/usr/bin/env python3
"""Writes the seed corpus for the mesh protocol fuzz target.

Each seed is a raw byte stream as a peer would send it on the mesh port. The
frames are built here from the layout in man/zctl-protocol.7, independently of
the C++ encoder, so the seeds also check that the page and the code agree.

Usage: tests/fuzz/make_corpus.py [OUTPUT_DIR]   (default: tests/fuzz/corpus/mesh)
"""

import os
import struct
import sys

MAGIC = b"ZCTL"
HELLO, HELLO_ACK, JOIN, ACCEPTED, REJECTED, VERSIONS, HEARTBEAT, HEARTBEAT_ACK, REDIRECT = range(1, 10)


def string(text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def frame(msg_type, body, version=1, flags=0, length=None):
    if length is None:
        length = len(body)
    return MAGIC + struct.pack(">BBHI", version, msg_type, flags, length) + body


def hello(node="ctrl2", cluster="prod", lo=1, hi=1, version=1):
    return frame(HELLO, bytes([lo, hi]) + string(node) + string(cluster), version=version)


def member(ident, mesh, raft, voter):
    return string(ident) + string(mesh) + string(raft) + bytes([1 if voter else 0])


SEEDS = {
    # One valid frame of every type.
    "hello": hello(),
    "hello_range": hello("node-7.eu_west", "prod", 1, 3),
    "hello_ack": frame(HELLO_ACK, bytes([1]) + string("ctrl1") + string("prod")),
    "join": frame(JOIN, string("10.0.0.2:6263") + string("s3cr3t")),
    "join_no_token": frame(JOIN, string("[::1]:6263") + string("")),
    "accepted": frame(ACCEPTED, string("ctrl1") + struct.pack(">H", 2)
                      + member("ctrl1", "10.0.0.1:6262", "10.0.0.1:6263", True)
                      + member("ctrl2", "10.0.0.2:6262", "10.0.0.2:6263", False)),
    "rejected": frame(REJECTED, string("bad_token") + string("the join token does not match \u2717")),
    "versions": frame(VERSIONS, bytes([1, 1])),
    "versions_many": frame(VERSIONS, bytes([3, 1, 2, 7])),
    "heartbeat": frame(HEARTBEAT, struct.pack(">QQ", 7, 42)),
    "heartbeat_ack": frame(HEARTBEAT_ACK, struct.pack(">Q", 42)),
    "redirect": frame(REDIRECT, string("ctrl3") + string("10.0.0.3:6262")),
    # What a joining node sends, in order.
    "client_session": hello() + frame(JOIN, string("10.0.0.2:6263") + string("tok"))
                      + frame(HEARTBEAT, struct.pack(">QQ", 1, 1)) + frame(HEARTBEAT_ACK, struct.pack(">Q", 1)),
    "client_session_join_first": frame(JOIN, string("10.0.0.2:6263") + string("")) + hello(),
    # What the probe's bad modes send, and other broken streams.
    "http": b"GET / HTTP/1.1\r\nHost: ctrl1\r\n\r\n",
    "tls_client_hello": bytes([0x16, 0x03, 0x01, 0x00, 0x2F, 0x01, 0x00, 0x00, 0x2B, 0x03, 0x03]) + bytes(32),
    "bad_magic_late": b"ZCTX" + bytes(8),
    "bad_version": hello(version=2),
    "version_zero": hello(version=0),
    "oversize": frame(HEARTBEAT, b"", length=0x00100000),
    "at_limit_header": frame(HEARTBEAT, b"", length=2048 - 12),  # the fuzz target's limit
    "partial_header": hello()[:7],
    "partial_body": hello()[:20],
    "flags": frame(HEARTBEAT, struct.pack(">QQ", 1, 1), flags=0x8000),
    "unknown_type": frame(0x2A, b"\x00"),
    "trailing": frame(HEARTBEAT_ACK, struct.pack(">Q", 1) + b"\x00"),
    "string_past_end": frame(HELLO, bytes([1, 1]) + struct.pack(">H", 70) + b"ctrl2"),
    "bad_id": hello("ctrl 2"),
    "too_many_members": frame(ACCEPTED, string("ctrl1") + struct.pack(">H", 257)),
    "bad_voter": frame(ACCEPTED, string("a") + struct.pack(">H", 1) + member("b", "c:1", "d:2", True)[:-1] + b"\x02"),
    "bad_utf8": frame(REJECTED, string("bad_token") + string(b"\xed\xa0\x80")),
    "empty_body": frame(HEARTBEAT, b""),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "mesh")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
