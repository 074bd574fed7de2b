"""The default pager (GNU Mach's default_pager, simplified): anonymous memory's backing
store, a swap file.

    python -m translators.defpager --run-dir DIR [--name defpager] [--swap FILE]
        [--swap-size MiB] [--threads multithread|workers] [--workers N]
        [--thread-timeout S] [--stats-interval S] [--log-level L]

It registers its port with vm_set_default_memory_manager on host_priv.  When the
kernel first pages out an anonymous object it sends memory_object_create with the new
object's receive right: that port joins the bucket as a libpager pager whose ops keep
the object's pages in swap slots (one slot per page offset, reused for the same offset;
slots come from a free list, then from the unused tail of the file).  Pages come back
with data_initialize / data_return (written to their slots), are asked for with
data_request (read back and supplied; a page never written gets data_unavailable, the
kernel zero-fills), and memory_object_terminate frees the object's slots.  A full swap
file makes the write fail with ENOSPC: libpager marks the page invalid and a later
request for it gets data_error.

Built on libpager rather than on bare handlers: the pagemap's paging-out / page-in wait
logic, sequence-number ordering under the multithread model and the statistics are the
same ones a file system's pagers use, so the only default-pager code is the swap store,
memory_object_create, data_initialize (a dirty data_return) and terminate's freeing.

Cluster conventions: the port is checked in with the name server as NAME, DIR/NAME.ready
holds the pid once serving, JSON logs go to DIR/NAME.log, SIGTERM stops it cleanly.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import structlog

from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import mach_port as P
from protocol.defs import memory_object as MO
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE
from translators import libpager as PG
from translators import libports as LP
from translators.libpager.data_return import _pager_S_memory_object_data_return
from translators.libpager.terminate import _pager_S_memory_object_terminate

log = structlog.get_logger("defpager")


DEFAULT_SWAP_MIB = 256
STALL_AFTER = 10.0  # seconds a message may be in a handler before it is reported


class SwapFile:
    """The swap file: ``nslots`` page slots, a free list of released slots (reused
    first, LIFO) and a high-water mark below which every slot was handed out once."""

    def __init__(self, path: str | os.PathLike, size: int):
        if size < PAGE_SIZE:
            raise ValueError("swap smaller than one page")
        self.path = Path(path)
        self.nslots = size // PAGE_SIZE
        self.created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, self.nslots * PAGE_SIZE)  # sparse: no disk until written
        self.lock = threading.Lock()
        self.free: list[int] = []
        self.inuse = bytearray(self.nslots)  # one byte per slot: catches double frees
        self.next_slot = 0
        self.used = 0
        self.stats = {"bytes_written": 0, "bytes_read": 0, "page_writes": 0,
                      "page_reads": 0, "swap_full": 0, "slots_allocated": 0,
                      "slots_freed": 0}

    def alloc(self) -> int:
        """A free slot; OSError(ENOSPC) when the file is full."""
        with self.lock:
            if self.free:
                slot = self.free.pop()
            elif self.next_slot < self.nslots:
                slot = self.next_slot
                self.next_slot += 1
            else:
                self.stats["swap_full"] += 1
                raise OSError(errno.ENOSPC, "swap file full")
            self.inuse[slot] = 1
            self.used += 1
            self.stats["slots_allocated"] += 1
            return slot

    def release(self, slot: int):
        with self.lock:
            if not 0 <= slot < self.nslots or not self.inuse[slot]:
                raise ValueError(f"slot {slot} is not allocated")
            self.inuse[slot] = 0
            self.free.append(slot)
            self.used -= 1
            self.stats["slots_freed"] += 1

    def write(self, slot: int, data):
        if len(data) != PAGE_SIZE:
            raise ValueError("a swap slot holds one page")
        n = os.pwrite(self.fd, data, slot * PAGE_SIZE)
        if n != PAGE_SIZE:
            raise OSError(errno.EIO, f"short swap write ({n} bytes)")
        with self.lock:
            self.stats["bytes_written"] += n
            self.stats["page_writes"] += 1

    def read(self, slot: int) -> bytes:
        data = os.pread(self.fd, PAGE_SIZE, slot * PAGE_SIZE)
        if len(data) != PAGE_SIZE:
            raise OSError(errno.EIO, f"short swap read ({len(data)} bytes)")
        with self.lock:
            self.stats["bytes_read"] += len(data)
            self.stats["page_reads"] += 1
        return data

    def snapshot(self) -> dict:
        with self.lock:
            return {"slots_total": self.nslots, "slots_used": self.used,
                    "slots_free_list": len(self.free), "high_water": self.next_slot,
                    **self.stats}

    def close(self, unlink: bool = False):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if unlink:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


class SwapObject(PG.PagerOps):
    """libpager callbacks of one anonymous memory object: its pages' swap slots."""

    def __init__(self, swap: SwapFile, size: int):
        self.swap = swap
        self.size = size
        self.slots: dict[int, int] = {}  # page offset -> slot
        self.lock = threading.Lock()

    def read_page(self, pager, offset, length):
        with self.lock:
            slot = self.slots.get(offset)
        if slot is None:
            return None  # never written: data_unavailable, the kernel zero-fills
        return self.swap.read(slot), False

    def write_page(self, pager, offset, data):
        with self.lock:
            slot = self.slots.get(offset)
            if slot is None:
                slot = self.swap.alloc()
                self.slots[offset] = slot
        self.swap.write(slot, data)

    def report_extent(self, pager):
        return self.size

    def free_all(self) -> int:
        """Release every slot of the object; how many."""
        with self.lock:
            slots, self.slots = list(self.slots.values()), {}
        for s in slots:
            self.swap.release(s)
        return len(slots)

    def clear_user_data(self, pager):
        self.free_all()


class DefaultPager:
    """The default pager's state: the bucket, the swap file, its objects."""

    def __init__(self, bucket, swap: SwapFile, kernel: PG.KernelCalls | None = None):
        self.bucket = bucket
        self.swap = swap
        self.kernel = kernel if kernel is not None else PG.KernelCalls(bucket.rt)
        self.objects: dict[int, PG.Pager] = {}
        self.lock = threading.Lock()
        self.stats = {"objects_created": 0, "objects_terminated": 0}

    def handlers(self) -> dict:
        return {
            MO.memory_object_create: self.memory_object_create,
            MO.memory_object_data_initialize: PG.make_pager_handler(self._data_initialize),
            MO.memory_object_terminate: PG.make_pager_handler(self._terminate),
        }

    # memory_object_default.defs

    def memory_object_create(self, pi, new_object: int, size: int, control: int,
                             name: int, page_size: int):
        """memory_object_create: serve ``new_object`` (a receive right now ours) as a
        pager of swap slots; ready at once (no init follows)."""
        if pi.data is not self:
            raise MachError(LP.EOPNOTSUPP, "not the default pager port")
        if page_size != PAGE_SIZE:
            log.error("create: bad page size", page_size=page_size)
            for right, fn in ((new_object, self.kernel.destroy),
                              (control, self.kernel.deallocate),
                              (name, self.kernel.deallocate)):
                if right:
                    try:
                        fn(right)
                    except MachError:
                        pass
            return None
        ops = SwapObject(self.swap, size)
        p = PG.pager_import(ops, self.bucket, new_object, False,
                            V.MEMORY_OBJECT_COPY_DELAY, control=control, name=name,
                            kernel=self.kernel)
        with self.lock:
            self.objects[new_object] = p
            self.stats["objects_created"] += 1
        log.debug("object created", port=new_object, size=size, control=control)
        return None

    def _data_initialize(self, p, seqno, control, offset, data):
        """memory_object_data_initialize: first pageout of these pages — a dirty
        data_return whose data the kernel does not keep."""
        return _pager_S_memory_object_data_return(p, seqno, control, offset, data, True,
                                                  False)

    def _terminate(self, p, seqno, control, name):
        """memory_object_terminate: libpager forgets the object; the default pager also
        frees its slots and destroys its port (nobody can name the object again)."""
        kept = _pager_S_memory_object_terminate(p, seqno, control, name)
        freed = p.ops.free_all()
        port = p.port_right
        with self.lock:
            if self.objects.pop(port, None) is not None:
                self.stats["objects_terminated"] += 1
        LP.ports_destroy_right(p.pi)
        LP.ports_port_deref(p.pi)  # pager_import's reference
        log.debug("object terminated", port=port, slots_freed=freed)
        return kept

    def snapshot(self) -> dict:
        with self.lock:
            d = {"objects": len(self.objects), **self.stats}
        sw = self.swap.snapshot()
        d.update(sw)
        d["pages_in_swap"] = sw["slots_used"]
        return d


class WatchedDemuxer(PG.PagerDemuxer):
    """libpager's demuxer, remembering which message each server thread serves, so that
    a handler stuck in it (a page-in the kernel waits for) is reported with its stack."""

    def __init__(self, bucket, handlers: dict):
        super().__init__(bucket, handlers)
        self.inflight: dict[int, tuple] = {}  # thread ident -> (port, seqno, id, since)
        self._reported: set[tuple] = set()

    def serve(self, msg):
        me = threading.get_ident()
        self.inflight[me] = (msg.local_port, msg.seqno, msg.msgh_id, time.monotonic())
        try:
            return super().serve(msg)
        finally:
            self.inflight.pop(me, None)

    def report_stalls(self, after: float = STALL_AFTER) -> int:
        """Log each message in a handler for more than ``after`` seconds once (routine,
        port, seqno, the pager's last seqno, the thread's stack); how many are."""
        now = time.monotonic()
        frames = sys._current_frames()
        stalled = 0
        live = set()
        for ident, (port, seqno, msgh_id, since) in list(self.inflight.items()):
            key = (ident, port, seqno, since)
            live.add(key)
            if now - since < after:
                continue
            stalled += 1
            if key in self._reported:
                continue
            self._reported.add(key)
            entry = self.demux.table.get(msgh_id)
            pi = self.bucket.lookup(port)
            last = None
            if pi is not None:
                last = getattr(pi.data, "seqno", None)
                LP.ports_port_deref(pi)
            frame = frames.get(ident)
            log.warning("handler stalled", port=port, seqno=seqno, pager_seqno=last,
                        routine=entry[0].name if entry else msgh_id,
                        seconds=round(now - since, 1),
                        stack="".join(traceback.format_stack(frame)[-6:]) if frame else "")
        self._reported &= live
        return stalled


def watch_stalls(demuxer: WatchedDemuxer, stop: threading.Event, every: float = 2.0):
    """A daemon thread reporting stalled handlers until ``stop`` is set."""
    def loop():
        while not stop.wait(every):
            demuxer.report_stalls()

    t = threading.Thread(target=loop, name="stall-watch", daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------- the process

def parse_args(argv=None):
    ap = LP.translator_arg_parser("translators.defpager", __doc__, "defpager")
    ap.add_argument("--swap", help="swap file (default RUN_DIR/swap)")
    ap.add_argument("--swap-size", type=int, default=DEFAULT_SWAP_MIB,
                    help=f"swap size in MiB (default {DEFAULT_SWAP_MIB})")
    ap.add_argument("--keep-swap", action="store_true",
                    help="leave a swap file this process created in place at exit")
    ap.add_argument("--max-threads", type=int, default=LP.DEFAULT_MAX_THREADS)
    args = ap.parse_args(argv)
    if args.swap_size < 1:
        ap.error("--swap-size must be at least 1 MiB")
    if args.workers < 1 or args.max_threads < 1 or args.thread_timeout < 0:
        ap.error("bad thread settings")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t = LP.Translator(args, "default pager", log)
    try:
        swap = SwapFile(args.swap or t.run_dir / "swap", args.swap_size * 1024 * 1024)
    except (OSError, ValueError) as e:
        log.error("cannot open the swap file", error=str(e))
        return 1
    try:
        rt = t.connect()
        if rt is None:
            return 1
        with t:
            bucket = LP.ports_create_bucket(rt)
            dp = DefaultPager(bucket, swap)
            root_class = LP.ports_create_class(name="default-pager")
            root = LP.ports_create_port(root_class, bucket, data=dp)
            send = LP.ports_get_send_right(root)
            right = LP.ports_get_right(root)  # one more make-send: the kernel's
            LP.ports_port_deref(root)
            demuxer = WatchedDemuxer(bucket, dp.handlers())
            server = t.add_server(LP.make_server(args.threads, bucket, demuxer,
                                                 thread_timeout=args.thread_timeout or None,
                                                 workers=args.workers,
                                                 max_threads=args.max_threads, name=args.name))
            t.stopping_stats = lambda: {**dp.snapshot(), **_server_stats(server, None)}
            server.start()
            watch_stalls(demuxer, t.stop)
            if not rt.host_priv:
                raise MachError(KernReturn.KERN_INVALID_HOST,
                                "no host_priv (the run directory holds no secret?)")
            prev = V.vm_set_default_memory_manager(rt.host_priv, right, rt=rt)
            if prev and prev != M.MACH_PORT_DEAD:  # a dead one's name is not ours to keep
                P.mach_port_deallocate(rt.task_self, prev, rt=rt)
            t.check_in(send)
            t.ready("default pager ready", model=args.threads, swap=str(swap.path),
                    swap_slots=swap.nslots, port=send, previous_default_pager=prev or 0)
            t.serve_until_stopped(lambda: {**dp.snapshot(), **_server_stats(server, bucket)})
        return t.code
    finally:
        swap.close(unlink=swap.created and not args.keep_swap)


def _server_stats(server, bucket) -> dict:
    d = {f"server_{k}": v for k, v in server.stats().items()}
    if bucket is not None:
        d.update({f"pagers_{k}": v for k, v in PG.pager_bucket_stats(bucket).items()})
    return d


if __name__ == "__main__":
    sys.exit(main())
