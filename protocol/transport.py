"""Frame I/O on ZeroMQ sockets, shared by the kernel and the task runtime.

These helpers call pyzmq's Cython backend (``zmq.backend.Socket``) directly: the sugar
layer's ``send`` (routing ids, groups), ``send_multipart``/``recv_multipart`` (per-frame
flag arithmetic, enum flags) and ``getsockopt`` (an enum built per ZMQ_EVENTS answer)
cost more, on the kernel's per-message path, than the socket calls themselves
(docs/performance.md has the figures).  Plain integer flags throughout.

Asking ZMQ_EVENTS is a poll(2) in libzmq (it processes the socket's command mailbox),
so a drain does not ask it per message: ``try_recv_frames`` costs nothing when a message
is queued and a caught zmq.Again when none is.  ``readable`` is for the one question
asked before sleeping on the socket's ZMQ_FD.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _Backend

NOBLOCK = int(zmq.NOBLOCK)
NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)

_send = _Backend.send
_recv = _Backend.recv
_get = _Backend.get
_Again = zmq.Again


def send_frames(sock, frames, block: bool = False):
    """Send a multipart message; raises zmq.Again (HWM reached, when not blocking) or
    zmq.ZMQError (EHOSTUNREACH from a ROUTER_MANDATORY socket)."""
    more, end = (SNDMORE, 0) if block else (NOBLOCK_MORE, NOBLOCK)
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], more)
    _send(sock, frames[last], end)


def readable(sock) -> bool:
    """A whole message is queued on ``sock`` (ZMQ_EVENTS; also resets its ZMQ_FD)."""
    return bool(_get(sock, EVENTS) & POLLIN)


def try_recv_frames(sock) -> list | None:
    """One whole multipart message, or None when none is queued."""
    try:
        first = _recv(sock, NOBLOCK)
    except _Again:
        return None
    frames = [first]
    while _get(sock, RCVMORE):
        frames.append(_recv(sock, NOBLOCK))
    return frames
