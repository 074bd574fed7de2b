"""``scripts/mach [--run-dir DIR] ls|cat|put|stat|rm|mkdir|sync SERVER:/PATH``: look
inside any file server of the name server (``ext2fs:/path``, ``memfs:/path``) without
writing code, through the Hurd's fs and io routines, as a Hurd program's libc would:

  ls [-l] S:/DIR     dir_lookup, dir_readdir (-l: io_stat of each entry)
  cat S:/FILE...     io_read from offset 0 until it returns nothing, to stdout
  put LOCAL S:/FILE  dir_lookup (O_WRITE|O_CREAT|O_TRUNC), io_write; LOCAL "-": stdin
  stat S:/PATH       io_stat
  rm S:/PATH         dir_unlink in the parent (dir_rmdir for a directory, empty)
  mkdir S:/DIR       dir_mkdir in the parent (mode 0755)
  sync S[:/FILE]     fsys_syncfs (wait) of the whole file system, or file_sync of one

The server's root comes from ``netname_look_up``; every port a command opens is given
back (mach_port_deallocate) when it is done.  No privilege is needed.
"""

from __future__ import annotations

import argparse
import stat as S
import sys
import time

from lab.client import ClusterError
from lab.tools.common import CALL_TIMEOUT, Session, ToolError, code_text, run_tool
from lab.tools.output import print_json, print_table, terminal
from protocol import message as M
from protocol.defs import fs as F
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError

CHUNK = 1 << 20  # bytes per io_read / io_write
IO_TIMEOUT = 120.0  # an io_write may wait for pageout to make room
DT_TYPES = {4: "d", 8: "-", 10: "l", 2: "c", 6: "b", 1: "p", 12: "s"}  # dirent.h DT_*


def parse_target(text: str, need_path: bool = True) -> tuple[str, str]:
    """"SERVER:/PATH" as (server, path without leading slashes); a bare "SERVER" only
    when ``need_path`` is false (its root)."""
    server, sep, path = text.partition(":")
    if not server or (need_path and not sep):
        raise ToolError(f"{text!r}: expected SERVER:/PATH (e.g. ext2fs:/dir/file)")
    return server, path.strip("/")


class FileServer:
    """A file server's root port in this task, and the ports opened from it."""

    def __init__(self, session: Session, server: str):
        self.session, self.rt, self.server = session, session.rt, server
        try:
            self.root = session.client.look_up(server, timeout=CALL_TIMEOUT)
        except ClusterError as e:
            known = ", ".join(session.kernel_info().get("kernel", {}).get("netnames", []))
            raise ToolError(f"{e} (the name server has: {known or 'nothing'})") from None
        self.opened = [self.root]

    def where(self, path: str) -> str:
        return f"{self.server}:/{path}"

    def fail(self, e: MachError, what: str, path: str) -> ToolError:
        return ToolError(f"{what} {self.where(path)}: {code_text(e.code)}")

    def lookup(self, path: str, flags: int = 0, mode: int = 0) -> int:
        """dir_lookup of ``path`` from the root: a port to it (given back at close)."""
        try:
            retry, rname, port = F.dir_lookup(self.root, path, flags, mode,
                                              timeout=CALL_TIMEOUT, rt=self.rt)
        except MachError as e:
            raise self.fail(e, "dir_lookup", path) from None
        if port:
            self.opened.append(port)
        if retry != F.FS_RETRY_NORMAL or rname or not port:
            raise ToolError(f"dir_lookup {self.where(path)}: retry {retry} {rname!r} "
                            "(other translators are not followed)")
        return port

    def call(self, routine, port: int, *args, what: str, path: str, timeout=CALL_TIMEOUT):
        try:
            return routine(port, *args, timeout=timeout, rt=self.rt)
        except MachError as e:
            raise self.fail(e, what, path) from None

    def stat(self, path: str, port: int | None = None) -> dict:
        port = port or self.lookup(path)
        return self.call(F.io_stat, port, what="io_stat", path=path)

    def readdir(self, path: str, port: int) -> list[tuple[str, int, int]]:
        """Every entry of the directory: (name, d_type, inode)."""
        out, entry = [], 0
        while True:
            data, amount = self.call(F.dir_readdir, port, entry, -1, 0, what="dir_readdir",
                                     path=path)
            if amount <= 0:
                return out
            out += [tuple(e) for e in M.unpackb(bytes(data))]
            entry += amount

    def close(self):
        for name in self.opened:
            try:
                mach_port_deallocate(self.rt.task_self, name, timeout=CALL_TIMEOUT,
                                     rt=self.rt)
            except MachError:
                pass
        self.opened = []


def parent_of(path: str) -> tuple[str, str]:
    head, _, name = path.rpartition("/")
    if not name:
        raise ToolError("the root cannot be removed or made")
    return head, name


def mode_text(mode: int) -> str:
    return S.filemode(mode)


def cmd_ls(fs: FileServer, path: str, args) -> int:
    port = fs.lookup(path)
    st = fs.stat(path, port)
    if not S.S_ISDIR(st["st_mode"]):
        entries = [(path.rpartition("/")[2], 8, st["st_ino"])]
        stats = {entries[0][0]: st}
    else:
        entries = sorted(e for e in fs.readdir(path, port) if e[0] not in (".", ".."))
        stats = {}
        if args.long or args.json:
            for name, _, _ in entries:
                sub = f"{path}/{name}" if path else name
                stats[name] = fs.stat(sub)
    if args.json:
        print_json([{"name": n, "d_type": t, "ino": i, "stat": stats.get(n)}
                    for n, t, i in entries])
        return 0
    if not args.long:
        for name, _, _ in entries:
            print(name)
        return 0
    rows = []
    for name, _, _ in entries:
        s = stats[name]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.get("st_mtime", 0)))
        rows.append([mode_text(s["st_mode"]), str(s.get("st_nlink", "")),
                     str(s["st_size"]), when, name])
    if terminal():
        print_table(["mode", "links", "size", "modified", "name"], rows)
    else:
        for r in rows:
            print(f"{r[0]} {r[1]:>3} {r[2]:>10} {r[3]} {r[4]}")
    return 0


def cmd_cat(fs: FileServer, path: str, args) -> int:
    port = fs.lookup(path, F.O_READ)
    out = sys.stdout.buffer
    offset = 0
    while True:
        data = fs.call(F.io_read, port, offset, CHUNK, what="io_read", path=path,
                       timeout=IO_TIMEOUT)
        if not data:
            break
        out.write(data)
        offset += len(data)
    out.flush()
    return 0


def cmd_put(fs: FileServer, path: str, args) -> int:
    src = sys.stdin.buffer if args.local == "-" else None
    try:
        src = src or open(args.local, "rb")
    except OSError as e:
        raise ToolError(f"{args.local}: {e.strerror}") from None
    port = fs.lookup(path, F.O_WRITE | F.O_CREAT | F.O_TRUNC, 0o644)
    written = 0
    with src:
        while chunk := src.read(CHUNK):
            view = memoryview(chunk)
            while view:
                n = fs.call(F.io_write, port, bytes(view), written, what="io_write",
                            path=path, timeout=IO_TIMEOUT)
                if n <= 0:
                    raise ToolError(f"io_write {fs.where(path)}: wrote nothing at {written}")
                written += n
                view = view[n:]
    if args.json:
        print_json({"path": fs.where(path), "bytes": written})
    return 0


def cmd_stat(fs: FileServer, path: str, args) -> int:
    st = fs.stat(path)
    if args.json:
        print_json(st)
        return 0
    rows = [[k, (mode_text(v) + f" ({v:o})") if k == "st_mode" else str(v)]
            for k, v in sorted(st.items())]
    if terminal():
        print_table(["field", fs.where(path)], rows)
    else:
        for k, v in rows:
            print(f"{k + ':':<12} {v}")
    return 0


def cmd_rm(fs: FileServer, path: str, args) -> int:
    head, name = parent_of(path)
    st = fs.stat(path)
    dport = fs.lookup(head)
    if S.S_ISDIR(st["st_mode"]):
        fs.call(F.dir_rmdir, dport, name, what="dir_rmdir", path=path)
    else:
        fs.call(F.dir_unlink, dport, name, what="dir_unlink", path=path)
    return 0


def cmd_mkdir(fs: FileServer, path: str, args) -> int:
    head, name = parent_of(path)
    dport = fs.lookup(head)
    fs.call(F.dir_mkdir, dport, name, 0o755, what="dir_mkdir", path=path)
    return 0


def cmd_sync(fs: FileServer, path: str, args) -> int:
    if path:
        port = fs.lookup(path)
        fs.call(F.file_sync, port, 1, 0, what="file_sync", path=path, timeout=IO_TIMEOUT)
    else:
        fs.call(F.fsys_syncfs, fs.root, 1, 0, what="fsys_syncfs", path=path,
                timeout=IO_TIMEOUT)
    return 0


COMMANDS = {"ls": cmd_ls, "cat": cmd_cat, "put": cmd_put, "stat": cmd_stat, "rm": cmd_rm,
            "mkdir": cmd_mkdir, "sync": cmd_sync}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mach", description="Look inside a file server of the name server "
        "(SERVER:/PATH, e.g. ext2fs:/dir/file) through the Hurd's fs and io routines.")
    ap.add_argument("--run-dir", help="run directory (default ./run)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def target(p, nargs=None, help="SERVER:/PATH", json=True):
        p.add_argument("targets" if nargs else "target", nargs=nargs, metavar="SERVER:/PATH",
                       help=help)
        if json:
            p.add_argument("--json", action="store_true", help="JSON")

    p = sub.add_parser("ls", help="list a directory (dir_readdir)")
    p.add_argument("-l", dest="long", action="store_true", help="mode, links, size, time")
    target(p)
    target(sub.add_parser("cat", help="write files to stdout (io_read)"), "+", json=False)
    p = sub.add_parser("put", help="write a local file (or - for stdin) to a file (io_write)")
    p.add_argument("local", metavar="LOCAL")
    target(p)
    target(sub.add_parser("stat", help="a file's attributes (io_stat)"))
    target(sub.add_parser("rm", help="remove a file or an empty directory"))
    target(sub.add_parser("mkdir", help="make a directory (dir_mkdir)"))
    target(sub.add_parser("sync", help="write a file system's (or one file's) dirty pages "
                                       "to its store, waiting"),
           help="SERVER or SERVER:/FILE")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    targets = [parse_target(t) for t in args.targets] if args.cmd == "cat" else [
        parse_target(args.target, need_path=args.cmd != "sync")]
    with Session(args.run_dir, "mach") as session:
        servers: dict[str, FileServer] = {}
        try:
            for server, path in targets:
                fs = servers.get(server) or servers.setdefault(
                    server, FileServer(session, server))
                COMMANDS[args.cmd](fs, path, args)
        finally:
            for fs in servers.values():
                fs.close()
    return 0


def cli(argv=None) -> int:
    """scripts/mach."""
    return run_tool("mach", main, argv)
