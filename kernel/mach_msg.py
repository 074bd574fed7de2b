"""The mach_msg trap (GNU Mach ipc/mach_msg.c): send, receive, or both.

The queue side (ipc_mqueue_send, ipc_mqueue_receive, threads waiting on queues) is in
kernel.ipc_mqueue.
"""

from __future__ import annotations

from kernel.ipc_kmsg import ipc_kmsg_copyin
from kernel.ipc_mqueue import FULL, ipc_mqueue_receive, ipc_mqueue_send, ipc_mqueue_send_block
from protocol import message as M
from protocol.kern_return import MachError
from protocol.vm_param import round_page, trunc_page


def mach_msg_trap(k, task, h, frames):
    """h: [OP_MSG, tid, seq, option, send_timeout, rcv_name, rcv_timeout,
    msgh_id, remote, remote_disp, local, local_disp, descs] (already checked)."""
    tid, seq, option = h[1], h[2], h[3]
    if len(h) == 14 and h[13] and task.map is not None:
        ool_deallocate(k, task, h[13])
    rcv_timeout = h[6] if option & M.MACH_RCV_TIMEOUT else -1
    if option & M.MACH_SEND_MSG:
        body, ool = frames[2], frames[3:]
        kmsg, code = ipc_kmsg_copyin(k, task.space, h[7], h[8], h[9], h[10], h[11], h[12],
                                     body, ool)
        if code:
            k.reply_result(task, tid, seq, code)
            return
        k.stats["msgs_sent"] += 1
        if ipc_mqueue_send(k, kmsg) == FULL:
            ipc_mqueue_send_block(k, task, tid, seq, kmsg,
                                  h[4] if option & M.MACH_SEND_TIMEOUT else -1,
                                  h[5] if option & M.MACH_RCV_MSG else 0, rcv_timeout)
            return
    if option & M.MACH_RCV_MSG:
        ipc_mqueue_receive(k, task, tid, seq, h[5], rcv_timeout)
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
