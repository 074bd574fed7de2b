"""The Hurd's file system protocol, the part machemu serves: fs 20000, io 21000,
fsys 22000 (hurd/fs.defs, hurd/io.defs, hurd/fsys.defs).

Authentication is left out (every client is trusted); otherwise requests and replies
follow the Hurd's.  Errors are Hurd error_t codes: ``0x40000000 | errno`` with the Hurd's
(BSD-derived) errno numbers, which differ from Linux's above 34.
"""

from protocol.mig import OOL, Blob, Str, Subsystem, int64_t, integer_t, mach_port_send_t, vm_size_t

fs = Subsystem("fs", 20000)
io = Subsystem("io", 21000)
fsys = Subsystem("fsys", 22000)

PATH_MAX = 4096
NAME_MAX = 255


def hurd_errno(n: int) -> int:
    """_HURD_ERRNO: the error_t a Hurd server returns for a Unix errno."""
    return 0x40000000 | (n & 0x3FFF)


def unix_errno(code: int) -> int | None:
    return code & 0x3FFF if code & 0xFC000000 == 0x40000000 else None


# The Hurd's errno numbers (glibc sysdeps/mach/hurd/bits/errno.h).
EPERM = hurd_errno(1)
ENOENT = hurd_errno(2)
EIO = hurd_errno(5)
EBADF = hurd_errno(9)
ENOMEM = hurd_errno(12)
EACCES = hurd_errno(13)
EEXIST = hurd_errno(17)
ENOTDIR = hurd_errno(20)
EISDIR = hurd_errno(21)
EINVAL = hurd_errno(22)
EFBIG = hurd_errno(27)
ENOSPC = hurd_errno(28)
EROFS = hurd_errno(30)
EOPNOTSUPP = hurd_errno(45)
ENAMETOOLONG = hurd_errno(63)
ENOTEMPTY = hurd_errno(66)
EDQUOT = hurd_errno(69)

_BY_NAME = {"EPERM": EPERM, "ENOENT": ENOENT, "EIO": EIO, "EBADF": EBADF, "ENOMEM": ENOMEM,
            "EACCES": EACCES, "EEXIST": EEXIST, "ENOTDIR": ENOTDIR, "EISDIR": EISDIR,
            "EINVAL": EINVAL, "EFBIG": EFBIG, "ENOSPC": ENOSPC, "EROFS": EROFS,
            "EOPNOTSUPP": EOPNOTSUPP, "ENAMETOOLONG": ENAMETOOLONG,
            "ENOTEMPTY": ENOTEMPTY, "EDQUOT": EDQUOT}


def from_os_error(n: int) -> int:
    """The Hurd error_t for a host (Linux) errno; EIO for one machemu does not name."""
    import errno

    return _BY_NAME.get(errno.errorcode.get(n, ""), EIO)

# dir_lookup flags (O_* as the Hurd defines them) and retry types.
O_READ = 0x0001
O_WRITE = 0x0002
O_EXEC = 0x0004
O_CREAT = 0x0010
O_EXCL = 0x0020
O_TRUNC = 0x00010000
FS_RETRY_NORMAL = 1

file_set_size = fs.routine("file_set_size", 6, [("new_size", int64_t)])
file_sync = fs.routine("file_sync", 13, [("wait", integer_t), ("omit_metadata", integer_t)])
dir_lookup = fs.routine(
    "dir_lookup", 18,
    [("file_name", Str(PATH_MAX)), ("flags", integer_t), ("mode", integer_t)],
    [("do_retry", integer_t), ("retry_name", Str(PATH_MAX)), ("result", mach_port_send_t)])
dir_readdir = fs.routine(
    "dir_readdir", 19,
    [("entry", integer_t), ("nentries", integer_t), ("bufsiz", vm_size_t)],
    [("data", OOL()), ("amount", integer_t)])
dir_mkdir = fs.routine("dir_mkdir", 20, [("name", Str(NAME_MAX)), ("mode", integer_t)])
dir_rmdir = fs.routine("dir_rmdir", 21, [("name", Str(NAME_MAX))])
dir_unlink = fs.routine("dir_unlink", 22, [("name", Str(NAME_MAX))])

io_write = io.routine("io_write", 0, [("data", OOL()), ("offset", int64_t)],
                      [("amount", vm_size_t)])
io_read = io.routine("io_read", 1, [("offset", int64_t), ("amount", vm_size_t)],
                     [("data", OOL())])
io_stat = io.routine("io_stat", 13, [], [("stat_info", Blob())])
io_map = io.routine("io_map", 18, [],
                    [("memobjrd", mach_port_send_t), ("memobjwt", mach_port_send_t)])

fsys_syncfs = fsys.routine("fsys_syncfs", 4, [("wait", integer_t),
                                              ("do_children", integer_t)])
