"""Message queues (GNU Mach ipc/ipc_mqueue.c): messages, waiting receivers, blocked senders.

A user send to a full queue blocks (a ``Waiter`` holding the message) or times out;
messages sent through a send-once right and messages the kernel sends itself
(MACH_SEND_ALWAYS) ignore the limit, as in GNU Mach.
"""

from __future__ import annotations

from collections import deque


class Waiter:
    """A task thread suspended in the kernel: a receive, or a send blocked on a full
    queue (then ``kmsg`` is set, and ``rcv_name``/``rcv_timeout`` is the receive half of
    an RPC to continue with once the send is done)."""

    __slots__ = ("task", "tid", "seq", "deadline", "done", "kmsg", "queue", "rcv_name",
                 "rcv_timeout", "nbytes")

    def __init__(self, task, tid, seq, deadline):
        self.task, self.tid, self.seq, self.deadline = task, tid, seq, deadline
        self.done = False
        self.kmsg = None
        self.queue = None
        self.rcv_name = 0
        self.rcv_timeout = -1
        self.nbytes = 0


class IPCMQueue:
    __slots__ = ("messages", "receivers", "senders", "qlimit")

    def __init__(self, qlimit: int):
        self.messages: deque = deque()
        self.receivers: deque = deque()
        self.senders: deque = deque()
        self.qlimit = qlimit

    def full(self) -> bool:
        return len(self.messages) >= self.qlimit

    def first_receiver(self):
        """The longest-waiting live receiver, or None (timed-out ones are dropped)."""
        r = self.receivers
        while r:
            w = r.popleft()
            if not w.done:
                return w
        return None

    def waiting_receivers(self) -> int:
        return sum(1 for w in self.receivers if not w.done)

    def blocked_senders(self) -> int:
        return sum(1 for w in self.senders if not w.done)

    def first_sender(self):
        s = self.senders
        while s:
            w = s.popleft()
            if not w.done:
                return w
        return None
