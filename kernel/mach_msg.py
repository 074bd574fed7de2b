"""The mach_msg trap (GNU Mach ipc/mach_msg.c): send, receive, or both.

The queue side (ipc_mqueue_send, ipc_mqueue_receive, threads waiting on queues) is in
kernel.ipc_mqueue.
"""

from __future__ import annotations

from kernel.ipc_kmsg import ipc_kmsg_copyin
from kernel.ipc_mqueue import FULL, ipc_mqueue_receive, ipc_mqueue_send, ipc_mqueue_send_block
from protocol import message as M
from protocol.kern_return import MachError
from protocol.message import (
    H_DEALLOC,
    H_DESCS,
    H_ID,
    H_LOCAL,
    H_LOCAL_DISP,
    H_OPTION,
    H_RCV_NAME,
    H_RCV_TIMEOUT,
    H_REMOTE,
    H_REMOTE_DISP,
    H_SEND_TIMEOUT,
    H_SEQ,
    H_THREAD,
)
from protocol.vm_param import round_page, trunc_page


def mach_msg_trap(k, task, h, frames):
    """mach_msg_trap: ``h`` is an OP_MSG header (protocol.message, H_*), already
    checked; frames[2] the body, frames[3:] the out-of-line data."""
    tid, seq, option = h[H_THREAD], h[H_SEQ], h[H_OPTION]
    if len(h) > H_DEALLOC and h[H_DEALLOC] and task.map is not None:
        ool_deallocate(k, task, h[H_DEALLOC])
    rcv_timeout = h[H_RCV_TIMEOUT] if option & M.MACH_RCV_TIMEOUT else -1
    if option & M.MACH_SEND_MSG:
        kmsg, code = ipc_kmsg_copyin(k, task.space, h[H_ID], h[H_REMOTE], h[H_REMOTE_DISP],
                                     h[H_LOCAL], h[H_LOCAL_DISP], h[H_DESCS], frames[2],
                                     frames[3:])
        if code:
            if k.trace is not None:
                k.trace.refused(task, tid, h[H_ID], h[H_REMOTE], code)
            k.reply_result(task, tid, seq, code)
            return
        kmsg.sender = task.id  # the trailer: who sent it, whatever the message says
        k.stats["msgs_sent"] += 1
        if k.trace is not None:  # rpctrace (kernel.ipc_trace); off: this test only
            k.trace.record(kmsg, task, tid, h[H_REMOTE])
        if ipc_mqueue_send(k, kmsg) == FULL:
            ipc_mqueue_send_block(k, task, tid, seq, kmsg,
                                  h[H_SEND_TIMEOUT] if option & M.MACH_SEND_TIMEOUT else -1,
                                  h[H_RCV_NAME] if option & M.MACH_RCV_MSG else 0,
                                  rcv_timeout)
            return
    if option & M.MACH_RCV_MSG:
        ipc_mqueue_receive(k, task, tid, seq, h[H_RCV_NAME], rcv_timeout)
    else:
        k.reply_result(task, tid, seq, 0)


def ool_deallocate(k, task, regions):
    """vm_deallocate of the OOL regions a trap gives back."""
    vmap = task.map
    for i in range(0, len(regions), 2):
        addr, size = regions[i], regions[i + 1]
        start, end = trunc_page(addr), round_page(addr + size)
        if size and end > start:
            try:
                vmap.vm_map_delete(start, end)
            except MachError:
                pass
