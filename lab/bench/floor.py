"""The transport floor (DESIGN section 9): two bare processes exchanging msgpack-encoded
4 KiB pages over the kernel's own transport, ZeroMQ DEALER <-> ROUTER on ipc://.

Only zmq and msgpack are used and nothing of machemu is imported (not even through
``lab``), so the floor is the transport alone.  Run as ``python -m lab.bench.role
floor-server|floor-client ...``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import msgpack
import zmq

from lab.bench.pages import page
from lab.bench.stats import time_calls

FLOOR_ACK_EVERY = 32  # the floor receiver grants credit in batches of this many
FLOOR_WINDOW = 256    # the floor sender's bound on messages in flight
HWM = 1000            # both sockets' send and receive high-water marks

_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(data):
    return msgpack.unpackb(data, raw=False)


def header(kind: str, n: int) -> bytes:
    """A floor message header: ``kind`` ("rtt", "stream", "reset", "ack") and a number,
    shaped like a Mach message header on the wire (op, thread, seq, option, ids, names,
    descriptors) so the floor encodes and decodes as much header as the kernel path."""
    return _packb([kind, 1, n, 3, -1, 0, -1, 50001, 1, 19, 2, 21, []])


def _socket(ctx, kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, HWM)
    s.setsockopt(zmq.RCVHWM, HWM)
    return s


def floor_server(endpoint: str, ready: str):
    """The receiving side of the floor: echoes round trips, drains streams granting
    credit every FLOOR_ACK_EVERY pages; writes its pid to ``ready`` once bound."""
    ctx = zmq.Context()
    s = _socket(ctx, zmq.ROUTER)
    s.bind(endpoint)
    Path(ready).write_text(str(os.getpid()))
    received = 0
    try:
        while True:
            ident, hdr, body = s.recv_multipart()
            h = _unpackb(hdr)
            data = _unpackb(body)
            kind = h[0]
            if kind == "rtt":
                s.send_multipart([ident, header("rtt", h[2]), _packb(data)])
            elif kind == "stream":
                received += 1
                if received % FLOOR_ACK_EVERY == 0:
                    s.send_multipart([ident, header("ack", received), b""])
            elif kind == "reset":
                received = 0
                s.send_multipart([ident, header("ack", 0), b""])
    finally:
        s.close(linger=0)
        ctx.term()


def floor_client(endpoint: str, rounds: int, messages: int, out: str):
    """The sending side of the floor.  Writes to ``out`` the nanoseconds of each of
    ``rounds`` round trips ("samples") and the seconds a credit-bounded stream of
    ``messages`` pages took until the receiver had them all ("stream_n", "stream_s")."""
    ctx = zmq.Context()
    s = _socket(ctx, zmq.DEALER)
    s.connect(endpoint)
    pg = page()
    seq = itertools.count()
    try:
        def rtt():
            s.send_multipart([header("rtt", next(seq)), _packb(pg)])
            hdr, body = s.recv_multipart()
            _unpackb(hdr)
            if _unpackb(body) != pg:
                raise SystemExit("floor: page corrupted")

        samples = time_calls(rtt, rounds)

        def stream(n):
            s.send_multipart([header("reset", 0), _packb(b"")])
            s.recv_multipart()
            acked = sent = 0
            t0 = time.perf_counter()
            while sent < n:
                if sent - acked >= FLOOR_WINDOW:
                    hdr, _ = s.recv_multipart()
                    acked = _unpackb(hdr)[2]
                    continue
                s.send_multipart([header("stream", sent), _packb(pg)])
                sent += 1
            # One connection is FIFO: the answer to a round trip sent behind the stream
            # proves the receiver has taken every page of it.
            s.send_multipart([header("rtt", sent), _packb(pg)])
            while True:
                hdr, _ = s.recv_multipart()
                if _unpackb(hdr)[0] == "rtt":
                    break
            return time.perf_counter() - t0

        stream(max(100, messages // 10))  # warm-up
        secs = stream(messages)
        Path(out).write_text(json.dumps({"samples": samples, "stream_n": messages,
                                         "stream_s": secs}))
    finally:
        s.close(linger=0)
        ctx.term()
