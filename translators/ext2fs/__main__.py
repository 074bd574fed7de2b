"""ext2fs: an ext2 image served with the fs protocol; file pages live in the kernel.

    python -m translators.ext2fs --run-dir DIR [--name ext2fs] [--image PATH]
        [--size-mib N] [--block-size N] [--threads multithread|workers]
        [--thread-timeout S] [--server-timeout S] [--sync-interval S]
        [--write-mode bulk|page] [--disk-latency-ms N] [--disk-queue-depth N]
        [--direct-io] [--hurd-heap] [--malloc-arenas N] [--hurdmalloc]
        [--pagemap none|mmap|heap] [--io-window moving|per-call]

Without --image a fresh image DIR/NAME.img is made (translators.ext2fs.mkfs, --size-mib
and --block-size).  One pager per file (translators.ext2fs.translator); io_read/io_write
through ext2fs's own mapping of each file unless --direct-io (the image directly, no
io_map).  Every --sync-interval seconds (default 30, 0 = never) every file's pages and
the metadata are written back; SIGTERM syncs, then closes the image (clean).  An image
that cannot be mounted (corrupt superblock or group descriptors, unsupported features)
is refused: "cannot mount the image" with the reason is logged and the exit status is 2.  The root
directory is checked in with the name server under NAME; DIR/NAME.ready holds the pid.

--write-mode: how a data_return reaches the disk — ``bulk`` (the default, the Hurd
since 2025: one pager_write_pages per data_return, runs of up to 128 contiguous blocks
in one disk write) or ``page`` (the Hurd of 2011: one pager_write_page, one disk write,
per page).  --disk-latency-ms N makes every such disk write cost N ms on one device
that serves --disk-queue-depth writes at once (default 1: writes wait their turn).
The multithread model's threads time out as libdiskfs's do (translators.fsserver).

--hurd-heap, --malloc-arenas, --hurdmalloc, --pagemap and --io-window make ext2fs
allocate its own memory as the Hurd's did — glibc's brk heap and mprotected malloc
arenas, hurdmalloc's permanent pages, libpager's remapped pagemaps, pager_memcpy's
window mapped per call — with real kernel calls on its task, so that its map fragments
as the Hurd's did (translators.ext2fs.hurdalloc); by default none of it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import structlog

from translators import libports as LP
from translators.ext2fs import hurdalloc
from translators.ext2fs.filesystem import Ext2
from translators.ext2fs.mkfs import mkfs
from translators.ext2fs.translator import WRITE_MODES, Ext2Fs
from translators.fsserver import (
    DISKFS_TIMEOUTS,
    FsServer,
    check_diskfs_args,
    diskfs_server_stats,
    diskfs_startup,
    pager_bucket_stats,
)
from translators.hurdmem import map_census

log = structlog.get_logger("ext2fs")


def parse_args(argv=None):
    ap = LP.translator_arg_parser("translators.ext2fs", __doc__, "ext2fs",
                                  **DISKFS_TIMEOUTS)
    ap.add_argument("--image", help="ext2 image (default: a fresh DIR/NAME.img)")
    ap.add_argument("--size-mib", type=int, default=64, help="size of a fresh image")
    ap.add_argument("--block-size", type=int, default=4096, choices=(1024, 2048, 4096))
    ap.add_argument("--sync-interval", type=float, default=30.0,
                    help="seconds between periodic syncs (0 = never)")
    ap.add_argument("--write-mode", choices=WRITE_MODES, default="bulk",
                    help="bulk: pager_write_pages, runs of up to 128 blocks per disk "
                         "write (2025, default); page: one pager_write_page and one disk "
                         "write per page (2011)")
    ap.add_argument("--disk-latency-ms", type=float, default=0.0,
                    help="emulated disk latency per disk write")
    ap.add_argument("--disk-queue-depth", type=int, default=1,
                    help="disk writes the device serves at once; the others wait their "
                         "turn (default 1)")
    ap.add_argument("--direct-io", action="store_true",
                    help="io_read/io_write use the image directly (no mapping, no io_map)")
    hurdalloc.add_arguments(ap)
    args = ap.parse_args(argv)
    hurdalloc.check_args(ap, args)
    if args.size_mib < 1:
        ap.error("--size-mib must be at least 1")
    if args.disk_latency_ms < 0:
        ap.error("--disk-latency-ms must not be negative")
    if args.disk_queue_depth < 1:
        ap.error("--disk-queue-depth must be at least 1")
    check_diskfs_args(ap, args)
    return args


def periodic_sync(fs: Ext2Fs, stop: threading.Event, interval: float):
    """The Hurd's periodic sync thread (libdiskfs/sync-interval.c): every interval,
    diskfs_sync_everything (0) — every pager's lock_request sent at once, without
    waiting for the pages to be written (the burst of data_returns a Hurd sync makes) —
    then the metadata."""
    while not stop.wait(interval):
        try:
            fs.syncfs(False)
        except Exception:  # noqa: BLE001 - keep syncing
            log.exception("periodic sync failed")


def main(argv=None) -> int:
    args = parse_args(argv)
    name = args.name
    t = LP.Translator(args, "ext2fs", log, always_log_stopping=True)
    if args.image:
        image = Path(args.image)
    else:
        image = t.run_dir / f"{name}.img"
        mkfs(image, args.size_mib << 20, args.block_size)
    try:
        ext2 = Ext2(image)
    except OSError as e:
        # A corrupt or unsupported image is refused with what is wrong, not a traceback.
        log.error("cannot mount the image", image=str(image), errno=e.errno,
                  error=e.strerror or str(e))
        return 2
    rt = t.connect()
    if rt is None:
        ext2.close()
        return 1
    sync_stop = threading.Event()
    with t:
        fs_bucket = LP.ports_create_bucket(rt)
        pager_bucket = LP.ports_create_bucket(rt)
        alloc = hurdalloc.Ext2Allocations(rt, args.hurd_heap, args.hurdmalloc,
                                          args.pagemap, args.io_window, args.malloc_arenas)
        fs = Ext2Fs(ext2, rt=rt, pager_bucket=pager_bucket, direct_io=args.direct_io,
                    disk_latency=args.disk_latency_ms / 1000.0,
                    disk_queue_depth=args.disk_queue_depth, write_mode=args.write_mode,
                    alloc=alloc)
        srv = FsServer(fs, fs_bucket, name=name)

        def all_stats():
            return {**srv.stats, **fs.stats, **fs.disk_stats(), "nodes": len(fs.nodes),
                    **fs.map_stats(), **{f"ext2_{k}": v for k, v in ext2.stats.items()},
                    **pager_bucket_stats(pager_bucket), **diskfs_server_stats(t),
                    **alloc.stats()}

        t.stopping_stats = all_stats
        root = diskfs_startup(t, srv, pager_bucket)
        if args.sync_interval > 0:
            threading.Thread(target=periodic_sync, args=(fs, sync_stop, args.sync_interval),
                             name="ext2fs-sync", daemon=True).start()
        t.ready("ext2fs ready", model=args.threads, image=str(image),
                block_size=ext2.block_size, direct_io=args.direct_io,
                write_mode=args.write_mode, disk_latency_ms=args.disk_latency_ms,
                disk_queue_depth=args.disk_queue_depth, hurd_heap=args.hurd_heap,
                hurdmalloc=args.hurdmalloc, pagemap=args.pagemap, io_window=args.io_window,
                thread_timeout=args.thread_timeout, server_timeout=args.server_timeout,
                port=root, endpoint=t.endpoint)
        t.serve_until_stopped(all_stats)
        if args.map_census:
            log.info("map census", census=map_census(rt))
        sync_stop.set()
        # The final sync needs the pager threads: before the servers stop.
        fs.syncfs(True, timeout=60)  # bounded: the kernel may be going away too
        log.info("ext2fs synced", **all_stats())
    sync_stop.set()
    try:
        ext2.close()
    except OSError as e:
        log.error("closing the image failed", error=str(e))
        return 1
    return t.code


if __name__ == "__main__":
    sys.exit(main())
