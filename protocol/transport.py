"""Frame I/O on ZeroMQ sockets, shared by the kernel and the task runtime.

pyzmq's ``send_multipart``/``recv_multipart`` pay for enum flag arithmetic and, on an
empty socket, for a ``zmq.Again`` exception; on the kernel's per-message path those cost
more than the socket calls themselves, so these helpers use plain integer flags and ask
ZMQ_EVENTS instead of catching Again.
"""

from __future__ import annotations

import zmq

NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)


def send_frames(sock, frames, block: bool = False):
    """Send a multipart message; raises zmq.Again (HWM reached, when not blocking) or
    zmq.ZMQError (EHOSTUNREACH from a ROUTER_MANDATORY socket)."""
    send = sock.send
    last = len(frames) - 1
    more, end = (SNDMORE, 0) if block else (NOBLOCK_MORE, NOBLOCK)
    for i, f in enumerate(frames):
        send(f, more if i < last else end)


def readable(sock) -> bool:
    return bool(sock.getsockopt(EVENTS) & POLLIN)


def recv_frames(sock) -> list:
    """Receive one whole multipart message; call only when ``readable(sock)``."""
    recv = sock.recv
    frames = [recv(NOBLOCK)]
    getsockopt = sock.getsockopt
    while getsockopt(RCVMORE):
        frames.append(recv(NOBLOCK))
    return frames
