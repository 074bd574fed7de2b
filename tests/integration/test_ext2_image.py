"""translators.ext2fs against real e2fsprogs: images made by ``mke2fs -t ext2`` and filled
by ``debugfs`` read back byte-exact; images written by the library (and made by its
``mkfs``) pass ``e2fsck -fn`` and read back the same through ``debugfs``."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from translators.ext2fs import Ext2, Ext2Error, Ext2UnsupportedFeature
from translators.ext2fs import ondisk as D
from translators.ext2fs.mkfs import mkfs

TOOLS = ("mke2fs", "debugfs", "e2fsck")
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                reason="e2fsprogs (mke2fs, debugfs, e2fsck) not installed")

MiB = 1 << 20
BLOCK_SIZES = [1024, 2048, 4096]


def run(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, timeout=60)
    if check and r.returncode:
        raise AssertionError(f"{argv} -> {r.returncode}\n{r.stdout[-2000:]!r}\n"
                             f"{r.stderr[-2000:]!r}")
    return r


def mke2fs(img: Path, bs: int, size_mb: int, *extra: str) -> Path:
    run("mke2fs", "-t", "ext2", "-q", "-F", "-b", str(bs), *extra, str(img), f"{size_mb}M")
    return img


def debugfs(img: Path, cmds: list[str], tmp: Path, write=True) -> str:
    script = tmp / "debugfs.cmds"
    script.write_text("\n".join(cmds) + "\n")
    argv = ["debugfs"] + (["-w"] if write else []) + ["-f", str(script), str(img)]
    r = run(*argv)
    err = r.stderr.decode(errors="replace")
    bad = [ln for ln in err.splitlines() if ln and not ln.startswith("debugfs ")]
    assert not bad, f"debugfs complained: {bad[:5]}"
    return r.stdout.decode(errors="replace")


def assert_fsck_clean(img: Path) -> None:
    r = run("e2fsck", "-fn", str(img), check=False)
    assert r.returncode == 0, f"e2fsck -fn rc={r.returncode}\n{r.stdout.decode()[-4000:]}"
    # e2fsck checks the group counts against the bitmaps (pass 5) but quietly accepts
    # superblock totals that differ; check those against the groups here.
    with open(img, "rb") as f:
        sb = D.Superblock.parse(f.read(2048)[1024:])
        f.seek((sb.s_first_data_block + 1) * sb.block_size)
        raw = f.read(sb.group_count * D.GROUP_DESC_SIZE)
    gds = [D.GroupDesc.parse(raw, i * 32) for i in range(sb.group_count)]
    assert sb.s_free_blocks_count == sum(g.bg_free_blocks_count for g in gds)
    assert sb.s_free_inodes_count == sum(g.bg_free_inodes_count for g in gds)
    assert sb.s_state & D.EXT2_VALID_FS


def dump_all(img: Path, paths: list[str], tmp: Path) -> dict[str, bytes]:
    """Contents of image files as debugfs sees them (one debugfs run, ``dump``)."""
    out = tmp / "dump"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmds = [f'dump "{p}" "{out}/{i}"' for i, p in enumerate(paths)]
    debugfs(img, cmds, tmp, write=False)
    return {p: (out / str(i)).read_bytes() for i, p in enumerate(paths)}


def debugfs_cat(img: Path, path: str) -> bytes:
    return run("debugfs", "-R", f'cat "{path}"', str(img)).stdout


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def populate_with_debugfs(img: Path, tmp: Path, rng: random.Random, nmany=1000):
    """The reference tree (path -> bytes), written into the image by debugfs."""
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    files: dict[str, bytes] = {
        "/empty": b"",
        "/one": b"x",
        "/f4095": rand_bytes(rng, 4095),
        "/d/big1m": rand_bytes(rng, MiB),
        "/d/e/f/g/deep": b"deep file\n" * 37,
    }
    sparse = tmp / "sparse"
    last = rand_bytes(rng, 4096)
    with open(sparse, "wb") as f:
        f.seek(70 * MiB - 4096)
        f.write(last)
    cmds = ["mkdir d", "mkdir d/e", "mkdir d/e/f", "mkdir d/e/f/g", "mkdir many"]
    for i, (p, data) in enumerate(files.items()):
        (src / str(i)).write_bytes(data)
        cmds.append(f"write {src / str(i)} {p.lstrip('/')}")
    cmds.append(f"write {sparse} sparse70m")
    for i in range(nmany):
        data = f"file {i}\n".encode() * (i % 9)
        p = src / f"m{i}"
        p.write_bytes(data)
        cmds.append(f"write {p} many/f{i:04d}")
        files[f"/many/f{i:04d}"] = data
    cmds.append("symlink d/link /d/big1m")
    debugfs(img, cmds, tmp)
    files["/sparse70m"] = None  # checked separately (70 MiB)
    return files, last


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_read_mke2fs_image(tmp_path, bs):
    rng = random.Random(bs)
    img = mke2fs(tmp_path / "a.img", bs, 32)
    files, last = populate_with_debugfs(img, tmp_path, rng)
    with Ext2(img, read_only=True) as fs:
        feats = fs.sb.features()
        # What `mke2fs -t ext2` enables here; each is handled (see hyper.py).
        assert "filetype" in feats["incompat"]
        assert fs.read_only and not fs.ro_reasons
        for p, data in files.items():
            if data is None:
                continue
            ino = fs.namei(p)
            assert fs.read(ino) == data, p
            assert fs.stat(ino)["st_size"] == len(data)
        # Sparse 70 MiB: only the last 4 KiB were written; it reaches the indirect levels.
        ino = fs.namei("/sparse70m")
        st = fs.stat(ino)
        assert st["st_size"] == 70 * MiB
        inode = fs.read_inode(ino)
        if bs == 1024:
            assert inode.i_block[D.EXT2_TIND_BLOCK] != 0
        assert fs.read(ino, 70 * MiB - 4096, 4096) == last
        assert fs.read(ino, 70 * MiB - 4096 - 10, 20) == bytes(10) + last[:10]
        whole = fs.read(ino)
        assert len(whole) == 70 * MiB and whole[-4096:] == last
        assert whole.count(0, 0, 70 * MiB - 4096) == 70 * MiB - 4096
        # Directories: 1000 entries with file types; nested; the symlink.
        many = fs.readdir(fs.namei("/many"))
        names = sorted(e.name for e in many if e.name not in (b".", b".."))
        assert names == sorted(f"f{i:04d}".encode() for i in range(1000))
        assert all(e.file_type == D.EXT2_FT_REG_FILE for e in many if e.name[0:1] == b"f")
        types = {e.name: e.file_type for e in fs.readdir(2)}
        assert types[b"d"] == D.EXT2_FT_DIR and types[b"one"] == D.EXT2_FT_REG_FILE
        link = fs.namei("/d/link", follow=False)
        assert fs.readlink(link) == b"/d/big1m"
        assert fs.namei("/d/link") == fs.namei("/d/big1m")
        with pytest.raises(Ext2Error) as ei:
            fs.namei("/d/nope")
        assert ei.value.errno == errno.ENOENT
        with pytest.raises(Ext2Error) as ei:
            fs.write(fs.namei("/one"), 0, b"y")
        assert ei.value.errno == errno.EROFS


def _check_model(fs: Ext2, model: dict[str, bytes]) -> None:
    for p, data in model.items():
        assert fs.read(fs.namei(p)) == data, p


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_write_mke2fs_image(tmp_path, bs):
    rng = random.Random(1000 + bs)
    img = mke2fs(tmp_path / "w.img", bs, 48)
    files, last = populate_with_debugfs(img, tmp_path, rng)
    model = {p: bytearray(d) for p, d in files.items() if d is not None}
    p_per = bs // 4
    with Ext2(img) as fs:
        assert not fs.read_only
        root = 2
        # Many new files written at random offsets, extended, truncated.
        wdir = fs.mkdir(root, "w")
        for i in range(150):
            ino = fs.create(wdir, f"n{i}")
            buf = bytearray()
            for _ in range(rng.randint(1, 4)):
                off = rng.randint(0, 3 * bs + 100) if rng.random() < 0.7 else \
                    rng.randint(0, 300 * 1024)
                data = rand_bytes(rng, rng.randint(1, 3 * bs))
                fs.write(ino, off, data)
                if off > len(buf):
                    buf.extend(bytes(off - len(buf)))
                buf[off:off + len(data)] = data
            if i % 5 == 0:
                cut = rng.randint(0, len(buf))
                fs.truncate(ino, cut)
                del buf[cut:]
            if i % 7 == 0:
                grow = len(buf) + rng.randint(1, 5 * bs)
                fs.truncate(ino, grow)
                buf.extend(bytes(grow - len(buf)))
            model[f"/w/n{i}"] = buf
        # A file across the single -> double -> triple indirect boundaries (sparse).
        ino = fs.create(root, "edges")
        buf = bytearray()
        for lb in (11, 12, 12 + p_per - 1, 12 + p_per, 12 + p_per + p_per * p_per - 1,
                   12 + p_per + p_per * p_per):
            if lb * bs > 200 * MiB:
                continue
            data = rand_bytes(rng, bs + 3)
            off = lb * bs - 1
            fs.write(ino, off, data)
            buf.extend(bytes(off + len(data) - len(buf)))
            buf[off:off + len(data)] = data
        model["/edges"] = buf
        # Shrink it back into the direct blocks: frees indirect trees.
        fs.truncate(ino, 5 * bs + 7)
        del buf[5 * bs + 7:]
        # Overwrite and extend the debugfs-made files.
        big = fs.namei("/d/big1m")
        data = rand_bytes(rng, 3 * bs)
        fs.write(big, MiB - bs, data)
        model["/d/big1m"][MiB - bs:] = data
        fs.truncate(fs.namei("/f4095"), 1000)
        del model["/f4095"][1000:]
        fs.write(fs.namei("/empty"), 10, b"now")
        model["/empty"] = bytearray(bytes(10) + b"now")
        # The sparse file: write in the middle, then cut it below that point.
        sp = fs.namei("/sparse70m")
        fs.write(sp, 40 * MiB + 5, b"middle")
        assert fs.read(sp, 40 * MiB, 16) == bytes(5) + b"middle" + bytes(5)
        fs.truncate(sp, 40 * MiB + 8)
        assert fs.read(sp, 40 * MiB, 100) == bytes(5) + b"mid"
        # Unlink half of the 1000 files, rmdir/mkdir, rename.
        many = fs.namei("/many")
        for i in range(0, 1000, 2):
            fs.unlink(many, f"f{i:04d}")
            del model[f"/many/f{i:04d}"]
        for i in range(1000, 1100):
            ino = fs.create(many, f"g{i}")
            fs.write(ino, 0, f"new {i}".encode())
            model[f"/many/g{i}"] = bytearray(f"new {i}".encode())
        sub = fs.mkdir(root, "tree")
        a = fs.mkdir(sub, "a")
        fs.mkdir(a, "b")
        fs.mkdir(sub, "gone")
        fs.rmdir(sub, "gone")
        with pytest.raises(Ext2Error) as ei:
            fs.rmdir(root, "tree")
        assert ei.value.errno == errno.ENOTEMPTY
        fs.rename(root, "one", a, "one-moved")
        model["/tree/a/one-moved"] = model.pop("/one")
        fs.rename(2, "d", sub, "d2")  # a directory with contents changes parent
        for p in [p for p in model if p.startswith("/d/")]:
            model["/tree/d2/" + p[3:]] = model.pop(p)
        ddeep = fs.namei("/tree/d2/e/f/g")
        fs.unlink(ddeep, "deep")
        del model["/tree/d2/e/f/g/deep"]
        fs.rmdir(fs.namei("/tree/d2/e/f"), "g")
        assert fs.namei("/tree/d2/..") == sub
        _check_model(fs, model)
        free_before = fs.statfs()["f_bfree"]
    assert_fsck_clean(img)
    # Everything reads the same through debugfs, and through a fresh mount.
    dumped = dump_all(img, sorted(model), tmp_path)
    for p, data in model.items():
        assert dumped[p] == bytes(data), p
    assert debugfs_cat(img, "/tree/a/one-moved") == b"x"
    with Ext2(img, read_only=True) as fs:
        _check_model(fs, model)
        assert fs.statfs()["f_bfree"] == free_before
        assert len(fs.read(fs.namei("/sparse70m"))) == 40 * MiB + 8


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_mkfs_image_passes_fsck_and_populates(tmp_path, bs):
    rng = random.Random(bs * 7)
    img = tmp_path / "m.img"
    geo = mkfs(img, 24 * MiB + 3 * bs, bs)
    assert geo["groups"] >= 1
    assert_fsck_clean(img)
    r = run("dumpe2fs", "-h", str(img)) if shutil.which("dumpe2fs") else None
    if r is not None:
        out = r.stdout.decode()
        assert "Filesystem revision #:    1" in out
        assert "sparse_super" in out and "filetype" in out
    model: dict[str, bytes] = {}
    # A minimal metadata cache, so write-back by eviction is exercised too.
    with Ext2(img, cache_blocks=64) as fs:
        d = fs.mkdir(2, "dir")
        for i in range(300):
            data = rand_bytes(rng, rng.choice([0, 1, bs - 1, bs, bs + 1, 5 * bs, 70000]))
            ino = fs.create(d if i % 2 else 2, f"file{i}")
            fs.write(ino, 0, data)
            model[("/dir/" if i % 2 else "/") + f"file{i}"] = data
        for i in range(0, 300, 3):
            p = ("/dir/" if i % 2 else "/") + f"file{i}"
            fs.unlink(d if i % 2 else 2, f"file{i}")
            del model[p]
        big = fs.create(2, "big")
        data = rand_bytes(rng, 3 * MiB)
        fs.write(big, 0, data)
        model["/big"] = data
        fs.symlink(2, "short", "dir/file1")
        fs.symlink(2, "long", "x" * 200)
    assert_fsck_clean(img)
    dumped = dump_all(img, sorted(model), tmp_path)
    for p, data in model.items():
        assert dumped[p] == data, p
    out = debugfs(img, ["stat /long", "stat /short"], tmp_path, write=False)
    assert "Fast link dest: \"dir/file1\"" in out
    # Populated by e2fsprogs too.
    (tmp_path / "src").write_bytes(b"from debugfs")
    debugfs(img, [f"write {tmp_path / 'src'} viadebugfs", "mkdir viadebugfsdir"], tmp_path)
    assert_fsck_clean(img)
    with Ext2(img, read_only=True) as fs:
        assert fs.read(fs.namei("/viadebugfs")) == b"from debugfs"
        assert fs.readlink(fs.namei("/long", follow=False)) == b"x" * 200


@pytest.mark.timeout(120)
def test_htree_directory_read_and_modified(tmp_path):
    """dir_index: an htree directory (built by e2fsck -D) reads linearly; modifying it
    drops EXT2_INDEX_FL and e2fsck stays clean."""
    img = mke2fs(tmp_path / "h.img", 1024, 16)
    src = tmp_path / "s"
    src.write_bytes(b"s")
    cmds = ["mkdir big"] + [f"write {src} big/entry-with-a-long-name-{i:05d}"
                            for i in range(600)]
    debugfs(img, cmds, tmp_path)
    r = run("e2fsck", "-fyD", str(img), check=False)
    assert r.returncode in (0, 1), r.stdout.decode()[-2000:]
    with Ext2(img) as fs:
        d = fs.namei("/big")
        assert fs.read_inode(d).i_flags & D.EXT2_INDEX_FL
        names = set(fs.listdir(d))
        assert names == {f"entry-with-a-long-name-{i:05d}" for i in range(600)}
        ino = fs.create(d, "added")
        fs.write(ino, 0, b"added")
        fs.unlink(d, "entry-with-a-long-name-00007")
        assert not fs.read_inode(d).i_flags & D.EXT2_INDEX_FL
    assert_fsck_clean(img)
    assert debugfs_cat(img, "/big/added") == b"added"


@pytest.mark.timeout(60)
def test_large_file_size_high(tmp_path):
    img = mke2fs(tmp_path / "l.img", 4096, 16)
    with Ext2(img) as fs:
        ino = fs.create(2, "huge")
        fs.write(ino, 5 * (1 << 30), b"tail")
        inode = fs.read_inode(ino)
        assert inode.i_size_high == 1 and inode.size == 5 * (1 << 30) + 4
    assert_fsck_clean(img)
    out = debugfs(img, ["stat /huge"], tmp_path, write=False)
    assert f"Size: {5 * (1 << 30) + 4}" in out


@pytest.mark.timeout(60)
def test_unsupported_features(tmp_path):
    img = tmp_path / "e4.img"
    run("mke2fs", "-t", "ext4", "-q", "-F", str(img), "16M")
    with pytest.raises(Ext2UnsupportedFeature) as ei:
        Ext2(img)
    assert "extent" in ei.value.features and "extent" in str(ei.value)
    # An unknown ro_compat feature (huge_file here) mounts read-only.
    img2 = mke2fs(tmp_path / "hf.img", 1024, 8, "-O", "huge_file")
    with Ext2(img2) as fs:
        assert fs.read_only and "huge_file" in fs.ro_reasons
        assert fs.listdir(2) == ["lost+found"]
        with pytest.raises(Ext2Error) as ei2:
            fs.mkdir(2, "x")
        assert ei2.value.errno == errno.EROFS
    assert_fsck_clean(img2)


@pytest.mark.timeout(60)
def test_state_and_counts_track_e2fsprogs(tmp_path):
    """Mounted read-write the image is marked not clean; after close e2fsck agrees with
    our free counts exactly (dumpe2fs)."""
    img = mke2fs(tmp_path / "c.img", 2048, 16)
    fs = Ext2(img)
    raw = Path(img).read_bytes()[1024:2048]
    assert not D.Superblock.parse(raw).s_state & D.EXT2_VALID_FS
    for i in range(50):
        fs.write(fs.create(2, f"x{i}"), 0, os.urandom(i * 1000))
    st = fs.statfs()
    fs.close()
    sb = D.Superblock.parse(Path(img).read_bytes()[1024:2048])
    assert sb.s_state & D.EXT2_VALID_FS
    assert sb.s_free_blocks_count == st["f_bfree"]
    assert sb.s_free_inodes_count == st["f_ffree"]
    assert_fsck_clean(img)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["rev0", "ext3"])
def test_revision0_and_clean_ext3_are_writable(tmp_path, kind):
    """A revision 0 image (no features: 16-bit name_len, no file types, 128-byte inodes)
    and a clean ext3 image (has_journal is compatible: written without journaling, as
    Linux's ext2 driver does) are read and written; e2fsck stays clean."""
    img = tmp_path / f"{kind}.img"
    if kind == "rev0":
        run("mke2fs", "-q", "-F", "-r", "0", "-b", "1024", str(img), "8M")
    else:
        run("mke2fs", "-t", "ext3", "-q", "-F", str(img), "16M")
    with Ext2(img) as fs:
        assert not fs.read_only
        assert fs.filetype == (kind == "ext3")
        d = fs.mkdir(2, "dir")
        for i in range(60):
            fs.write(fs.create(d, f"f{i}"), 0, b"z" * (i * 100))
        fs.symlink(2, "s", "dir/f3")
        fs.unlink(d, "f7")
        types = {e.name: e.file_type for e in fs.readdir(2)}
        assert types[b"dir"] == (D.EXT2_FT_DIR if kind == "ext3" else 0)
    assert_fsck_clean(img)
    assert debugfs_cat(img, "/dir/f5") == b"z" * 500
    with Ext2(img, read_only=True) as fs:
        assert fs.read(fs.namei("/s")) == b"z" * 300
        assert len(fs.listdir(fs.namei("/dir"))) == 59


@pytest.mark.timeout(60)
def test_needs_recovery_refused_and_flex_bg_read_only(tmp_path):
    img = tmp_path / "j.img"
    run("mke2fs", "-t", "ext3", "-q", "-F", str(img), "16M")
    with open(img, "r+b") as f:
        f.seek(1024)
        sb = D.Superblock.parse(f.read(1024))
        sb.s_feature_incompat |= D.EXT3_FEATURE_INCOMPAT_RECOVER
        f.seek(1024)
        f.write(sb.pack())
    with pytest.raises(Ext2UnsupportedFeature) as ei:
        Ext2(img, read_only=True)
    assert ei.value.features == ["needs_recovery"]
    img2 = mke2fs(tmp_path / "fb.img", 1024, 32, "-O", "flex_bg")
    (tmp_path / "h").write_bytes(b"hello\n")
    debugfs(img2, [f"write {tmp_path / 'h'} h"], tmp_path)
    with Ext2(img2) as fs:
        assert fs.read_only and fs.ro_reasons == ["flex_bg"]
        assert fs.read(fs.namei("/h")) == b"hello\n"
    assert_fsck_clean(img2)


@pytest.mark.timeout(60)
def test_threads_share_a_mount(tmp_path):
    """Ext2's lock serialises threads writing different files in one directory."""
    img = tmp_path / "t.img"
    mkfs(img, 32 * MiB, 1024)
    errors = []
    with Ext2(img) as fs:
        def worker(n):
            try:
                rng = random.Random(n)
                for i in range(40):
                    ino = fs.create(2, f"t{n}-{i}")
                    for _ in range(3):
                        fs.write(ino, rng.randint(0, 20000), rng.randbytes(3000))
                    if i % 4 == 0:
                        fs.unlink(2, f"t{n}-{i}")
            except BaseException as e:  # reported by the main thread
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and not any(t.is_alive() for t in threads)
        assert len(fs.listdir(2)) == 1 + 4 * 30
    assert_fsck_clean(img)


@pytest.mark.timeout(60)
def test_unlink_frees_xattr_block(tmp_path):
    """ext_attr: a file with an external xattr block (debugfs ea_set) is unlinked and
    truncated; the xattr block is released with the inode, kept by truncate."""
    img = mke2fs(tmp_path / "x.img", 1024, 8)
    (tmp_path / "h").write_bytes(b"hi\n")
    (tmp_path / "val").write_bytes(b"v" * 600)
    debugfs(img, [f"write {tmp_path / 'h'} a", f"write {tmp_path / 'h'} b",
                  f"ea_set -f {tmp_path / 'val'} a user.big",
                  f"ea_set -f {tmp_path / 'val'} b user.big"], tmp_path)
    with Ext2(img) as fs:
        a, b = fs.namei("/a"), fs.namei("/b")
        acl = fs.read_inode(a).i_file_acl
        assert acl and fs.read_inode(b).i_file_acl
        free = fs.statfs()["f_bfree"]
        fs.unlink(2, "a")
        assert fs.statfs()["f_bfree"] == free + 2  # data block + xattr block
        fs.truncate(b, 0)
        assert fs.read_inode(b).i_file_acl and fs.stat(b)["st_blocks"] == 2
    assert_fsck_clean(img)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bs", [1024, 4096])
def test_enospc_short_writes_leave_a_clean_image(tmp_path, bs):
    """Filling the image: a write that runs out of blocks is short (the bytes that fit
    are on disk, nothing stays allocated past EOF); creates and mkdirs that cannot get a
    block or an inode are undone.  e2fsck stays clean and debugfs reads what we wrote."""
    img = tmp_path / "full.img"
    mkfs(img, 4 * MiB, bs, inodes=64)
    rng = random.Random(bs)
    written = {}
    with Ext2(img) as fs:
        big = fs.create(2, "big")
        data = rng.randbytes(8 * MiB)
        n = fs.write(big, 0, data)
        assert 0 < n < len(data)
        assert fs.stat(big)["st_size"] == n
        written["/big"] = data[:n]
        with pytest.raises(Ext2Error) as ei:
            fs.write(big, n, b"more")
        assert ei.value.errno == errno.ENOSPC
        # Free a little, then fill the directory until blocks or inodes run out.
        fs.truncate(big, n - 20 * bs)
        written["/big"] = data[:n - 20 * bs]
        errs = set()
        for i in range(200):
            try:
                d = fs.mkdir(2, f"dir{i}")
                ino = fs.create(d, "f")
                written[f"/dir{i}/f"] = b""
                k = fs.write(ino, 0, b"q" * (bs + 1))  # may be short
                written[f"/dir{i}/f"] = b"q" * k
            except Ext2Error as e:
                errs.add(e.errno)
                break
        assert errs == {errno.ENOSPC}
        st = fs.statfs()
        assert st["f_bfree"] < 4 or st["f_ffree"] == 0
    assert_fsck_clean(img)
    dumped = dump_all(img, sorted(written), tmp_path)
    for p, d in dumped.items():
        assert d == written[p], p
