"""VM workloads: anon (anonymous memory pressure through the default pager) and mmap
(memfs files mapped with io_map and vm_map, written through the mapping, verified through
io_read and a fresh mapping)."""

from __future__ import annotations

import sys
import time

from lab.client import ClusterError
from lab.loadgen.files import call_all, create_file
from lab.loadgen.pages import MIB, TaskState, check_pages, page_pattern, pages_of
from lab.loadgen.table import dash
from lab.loadgen.vmworkload import VMWorkload, rates, server_row
from lab.loadgen.workload import Done, positive_float, positive_int, task_look_up, workload
from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE as PAGE

# ---------------------------------------------------------------- anon


@workload
class Anon(VMWorkload):
    """Anonymous memory pressure: each task vm_allocates a region, writes a distinct
    pattern to every page (vm_write), then reads every page back (vm_read) and compares
    it byte for byte.  Beyond physical memory the pageout daemon must send pages to the
    default pager and fault them back in."""

    name = "anon"
    help = "anonymous memory pressure: vm_allocate, write every page, read back, verify"

    def add_arguments(self, p):
        g = p.add_argument_group("anon")
        m = g.add_mutually_exclusive_group()
        m.add_argument("--mib", type=positive_float, metavar="M",
                       help="MiB per task (default: --factor of physical memory in all)")
        m.add_argument("--factor", type=positive_float, default=4.0, metavar="F",
                       help="all tasks together use F x the kernel's physical memory "
                            "(default 4)")
        self.add_common(g)

    def prepare(self, cluster, args):
        prep = self.prepare_vm(cluster, args)
        phys = prep["vm_before"]["physical_pages"]
        if args.mib is not None:
            pages = pages_of(args.mib)
        else:
            pages = max(1, -(-int(args.factor * phys) // args.tasks))
        prep["pages"] = pages
        total = pages * args.tasks
        prep["default_pager"] = self.default_pager_present(cluster)
        if total > phys // 2 and not prep["default_pager"]:
            raise ClusterError(
                f"no default pager registered (vm_set_default_memory_manager): {total} "
                f"anonymous pages against {phys} physical pages cannot be paged out")
        slots = (prep["swap_before"] or {}).get("slots_total")
        if slots and total > slots + phys:
            print(f"loadgen: warning: {total} pages exceed swap ({slots} slots) plus "
                  f"physical memory ({phys} pages)", file=sys.stderr)
        return prep

    def watch(self, cluster, args, prepared):
        return {"defpager": cluster.process_pid(args.pager_name)}

    def task_setup(self, rt, args, index, prepared):
        pages = prepared["pages"]
        addr = V.vm_allocate(rt.task_self, 0, pages * PAGE, True,
                             timeout=args.call_timeout, rt=rt)
        return TaskState(addr=addr, pages=pages, nonce=prepared["nonce"], task=index,
                         failed=set())

    def make_op(self, rt, args, st, task, thread):
        ch, timeout, me = args.chunk_pages, args.call_timeout, rt.task_self
        chunks = [c for c in range(-(-st.pages // ch)) if c % args.threads == thread]

        def steps():
            for counter in range(args.passes):
                for c in chunks:
                    yield "write", c, counter
                for c in chunks:
                    yield "verify", c, counter

        it = steps()

        def op(seq):
            try:
                kind, c, counter = next(it)
            except StopIteration:
                raise Done from None
            first = c * ch
            n = min(ch, st.pages - first)
            addr = st.addr + first * PAGE
            t0 = time.perf_counter()
            if kind == "write":
                data = b"".join(page_pattern(st.nonce, task, pg, counter)
                                for pg in range(first, first + n))
                try:
                    V.vm_write(me, addr, data, timeout=timeout, rt=rt)
                except MachError:
                    st.failed.add(c)
                    raise
                st.add(pages_written=n, write_s=time.perf_counter() - t0)
                st.progress += n
                return False
            if c in st.failed:  # its write failed (counted): nothing to compare
                st.add(pages_unverifiable=n)
                return False
            got = V.vm_read(me, addr, n * PAGE, timeout=timeout, rt=rt)
            st.add(verify_s=time.perf_counter() - t0)
            return check_pages(st, got, first, n, counter, lambda pg: (task, pg),
                               "vm_read", "pages_verified")
        return op

    def task_counters(self, rt, args, st):
        c = dict(st.counters)
        s = V.vm_statistics(rt.task_self, timeout=args.call_timeout, rt=rt)
        c["map_entries"] = s["map_entries"]
        t0 = time.perf_counter()
        V.vm_deallocate(rt.task_self, st.addr, st.pages * PAGE, timeout=args.call_timeout,
                        rt=rt)
        c["deallocate_s"] = time.perf_counter() - t0
        return c

    def summarize(self, s, args, prepared):
        self.summarize_vm(s, args, prepared)
        c = s["counters"]
        pages = prepared["pages"]
        phys = prepared["vm_before"]["physical_pages"]
        s["pages_per_task"] = pages
        s["mib_per_task"] = round(pages * PAGE / MIB, 3)
        s["total_mib"] = round(pages * args.tasks * PAGE / MIB, 3)
        s["memory_factor"] = round(pages * args.tasks / phys, 3)
        s["pages_written"] = c.get("pages_written", 0)
        s["pages_verified"] = c.get("pages_verified", 0)
        s["default_pager"] = prepared["default_pager"]
        rates(s, c, args)

    def check(self, s):
        n = s["pages_per_task"] * s["tasks"] * s["passes"]
        return self.check_work(s, {"pages_written": n, "pages_verified": n})

    def table(self, s):
        rows = [
            ("memory", f"{s['tasks']} x {s['mib_per_task']} MiB = {s['total_mib']} MiB "
                       f"({s['memory_factor']}x physical), {s['passes']} pass(es)"),
            ("pages", f"written {s['pages_written']}, verified {s['pages_verified']}, "
                      f"mismatches {s['mismatches']}"),
            ("throughput", f"{dash(s.get('mib_per_s'))} MiB/s (write "
                           f"{dash(s.get('write_mib_per_s'))}, read+verify "
                           f"{dash(s.get('verify_mib_per_s'))})"),
        ]
        return rows + self.vm_rows(s)


# ---------------------------------------------------------------- mmap

class MmapFile:
    """One memfs file of an mmap task: its port, memory object ports, mapping."""

    def __init__(self, nonce: int, task: int, i: int):
        self.i = i
        self.name = f"loadgen-{nonce:016x}-{task}-{i}"
        self.port = self.rd = self.wt = self.addr = 0
        self.failed = False


@workload
class Mmap(VMWorkload):
    """mmap writers on memfs files: each task creates files (dir_lookup O_CREAT), sizes
    them (file_set_size), maps each file's memory object (io_map, vm_map), writes a pattern
    through the mapping (vm_write), unmaps it, then verifies every page through io_read
    and through a fresh mapping (vm_read)."""

    name = "mmap"
    help = "mmap writers: io_map + vm_map memfs files, vm_write, verify by io_read and vm_read"

    def add_arguments(self, p):
        g = p.add_argument_group("mmap")
        g.add_argument("--server", default="memfs", metavar="NAME",
                       help="file system to look up in the name server (default memfs)")
        g.add_argument("--files", type=positive_int, default=2, metavar="N",
                       help="files per task (default 2)")
        g.add_argument("--file-mib", type=positive_float, default=4.0, metavar="M",
                       help="size of each file in MiB (default 4)")
        g.add_argument("--keep-files", action="store_true",
                       help="leave the files in place (default: dir_unlink at the end)")
        self.add_common(g)

    def prepare(self, cluster, args):
        cluster.look_up(args.server)
        prep = self.prepare_vm(cluster, args)
        prep["pages"] = pages_of(args.file_mib)
        prep["server_pid"] = cluster.process_pid(args.server)
        return prep

    def watch(self, cluster, args, prepared):
        return {"server": prepared["server_pid"],
                "defpager": cluster.process_pid(args.pager_name)}

    def task_setup(self, rt, args, index, prepared):
        root = task_look_up(rt, args.server, args.call_timeout)
        return TaskState(root=root, pages=prepared["pages"], nonce=prepared["nonce"],
                         task=index)

    def make_op(self, rt, args, st, task, thread):
        ch, timeout, me = args.chunk_pages, args.call_timeout, rt.task_self
        pages, size = st.pages, st.pages * PAGE
        nchunks = -(-pages // ch)
        mine = [i for i in range(args.files) if i % args.threads == thread]

        def steps():
            for i in mine:
                f = MmapFile(st.nonce, task, i)
                yield "open", f, 0, 0
                for counter in range(args.passes):
                    for kind in ("map", "write", "unmap", "io_verify", "map", "map_verify",
                                 "unmap"):
                        if f.failed:
                            break
                        if kind in ("write", "io_verify", "map_verify"):
                            for c in range(nchunks):
                                if f.failed:
                                    break
                                yield kind, f, c, counter
                        else:
                            yield kind, f, 0, counter
                yield "close", f, 0, 0

        it = steps()

        def key(page):
            return task, page_key_base + page

        page_key_base = 0

        def op(seq):
            nonlocal page_key_base
            try:
                kind, f, c, counter = next(it)
            except StopIteration:
                raise Done from None
            first = c * ch
            n = min(ch, pages - first)
            page_key_base = f.i * pages  # pages are numbered across the task's files
            t0 = time.perf_counter()
            try:
                if kind == "open":
                    create_file(rt, st.root, f, F.O_CREAT | F.O_READ | F.O_WRITE, timeout)
                    F.file_set_size(f.port, size, timeout=timeout, rt=rt)
                    f.rd, f.wt = F.io_map(f.port, timeout=timeout, rt=rt)
                    st.add(files_created=1, open_s=time.perf_counter() - t0)
                elif kind == "map":
                    f.addr = V.vm_map(me, 0, size, 0, True, f.wt, 0, False,
                                      V.VM_PROT_DEFAULT, V.VM_PROT_DEFAULT,
                                      V.VM_INHERIT_NONE, timeout=timeout, rt=rt)
                    st.add(maps=1, map_s=time.perf_counter() - t0)
                elif kind == "unmap":
                    addr, f.addr = f.addr, 0
                    V.vm_deallocate(me, addr, size, timeout=timeout, rt=rt)
                    st.add(unmap_s=time.perf_counter() - t0)
                elif kind == "write":
                    data = b"".join(page_pattern(st.nonce, task, page_key_base + pg, counter)
                                    for pg in range(first, first + n))
                    V.vm_write(me, f.addr + first * PAGE, data, timeout=timeout, rt=rt)
                    st.add(pages_written=n, write_s=time.perf_counter() - t0)
                    st.progress += n
                elif kind == "io_verify":
                    got = F.io_read(f.port, first * PAGE, n * PAGE, timeout=timeout, rt=rt)
                    st.add(io_verify_s=time.perf_counter() - t0)
                    return check_pages(st, got, first, n, counter, key, f"io_read {f.name}",
                                       "pages_verified_io")
                elif kind == "map_verify":
                    got = V.vm_read(me, f.addr + first * PAGE, n * PAGE, timeout=timeout,
                                    rt=rt)
                    st.add(map_verify_s=time.perf_counter() - t0)
                    return check_pages(st, got, first, n, counter, key, f"vm_read {f.name}",
                                       "pages_verified_map")
                elif kind == "close":
                    self._close(rt, args, st, f, size)
            except MachError:
                if kind in ("open", "map", "write", "unmap"):
                    f.failed = True  # the rest of this file's steps would only repeat it
                raise
            return False
        return op

    def _close(self, rt, args, st, f, size):
        """Unmap what is still mapped, drop the memory object and file rights, unlink."""
        timeout, me = args.call_timeout, rt.task_self
        calls = []
        if f.addr:
            calls.append(lambda: V.vm_deallocate(me, f.addr, size, timeout=timeout, rt=rt))
        for port in (f.rd, f.wt):
            if port:
                calls.append(lambda port=port: mach_port_deallocate(me, port, timeout=timeout,
                                                                    rt=rt))
        if f.port and not args.keep_files:
            calls.append(lambda: F.dir_unlink(st.root, f.name, timeout=timeout, rt=rt))
        if f.port:
            calls.append(lambda: mach_port_deallocate(me, f.port, timeout=timeout, rt=rt))
        first_err = call_all(calls)
        f.addr = f.rd = f.wt = f.port = 0
        st.add(files_closed=1)
        if first_err is not None:
            raise first_err

    def summarize(self, s, args, prepared):
        self.summarize_vm(s, args, prepared)
        c = s["counters"]
        s["server_name"] = args.server
        s["files_per_task"] = args.files
        s["pages_per_file"] = prepared["pages"]
        s["file_mib"] = round(prepared["pages"] * PAGE / MIB, 3)
        s["total_mib"] = round(prepared["pages"] * args.files * args.tasks * PAGE / MIB, 3)
        s["memory_factor"] = round(prepared["pages"] * args.files * args.tasks
                                   / prepared["vm_before"]["physical_pages"], 3)
        s["files_created"] = c.get("files_created", 0)
        s["pages_written"] = c.get("pages_written", 0)
        s["pages_verified_io"] = c.get("pages_verified_io", 0)
        s["pages_verified_map"] = c.get("pages_verified_map", 0)
        s.setdefault("server", {})
        rates(s, c, args)

    def check(self, s):
        files = s["files_per_task"] * s["tasks"]
        n = files * s["pages_per_file"] * s["passes"]
        return self.check_work(s, {"files_created": files, "pages_written": n,
                                   "pages_verified_io": n, "pages_verified_map": n})

    def table(self, s):
        rows = [
            ("files", f"{s['tasks']} x {s['files_per_task']} x {s['file_mib']} MiB = "
                      f"{s['total_mib']} MiB ({s['memory_factor']}x physical), "
                      f"{s['passes']} pass(es)"),
            ("pages", f"written {s['pages_written']}, verified by io_read "
                      f"{s['pages_verified_io']}, by vm_read {s['pages_verified_map']}, "
                      f"mismatches {s['mismatches']}"),
            ("throughput", f"{dash(s.get('mib_per_s'))} MiB/s (write "
                           f"{dash(s.get('write_mib_per_s'))}, io_read "
                           f"{dash(s.get('io_verify_mib_per_s'))}, vm_read "
                           f"{dash(s.get('map_verify_mib_per_s'))})"),
        ]
        return rows + server_row(s) + self.vm_rows(s)
