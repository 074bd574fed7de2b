"""ext2fs's emulated disk (store.DiskDevice) and write modes, without a kernel.

The device: writes are served first come first served, at most queue_depth at once,
each holding its slot for the write and the latency; time waited is counted.  The write
modes: a data_return served by libpager (test_libpager's kernel-less Rig) over a real
image reaches the disk as one write per page (``page``, 2011) or one write per run of
contiguous blocks (``bulk``, 2025), byte for byte."""

from __future__ import annotations

import threading

import pytest

from protocol.defs import memory_object as MO
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from tests.unit.test_libpager import CONTROL, Rig
from translators.ext2fs.filesystem import Ext2
from translators.ext2fs.mkfs import mkfs
from translators.ext2fs.store import DiskDevice
from translators.ext2fs.translator import Ext2Fs

pytestmark = pytest.mark.timeout(60)

P = PAGE_SIZE
WAIT = 20.0


def test_depth_one_serves_one_write_at_a_time_in_arrival_order():
    d = DiskDevice(0.0, queue_depth=1)
    gate = threading.Event()
    order, errors = [], []

    def write(i):
        def fn():
            order.append(i)
            if i == 0:
                assert gate.wait(WAIT)
        try:
            d.write(100, fn)
        except AssertionError as e:
            errors.append(e)

    first = threading.Thread(target=write, args=(0,))
    first.start()
    wait_for(lambda: d.inflight == 1, WAIT, what="the first write in service")
    rest = []
    for i in range(1, 5):  # each queued behind the last before the next arrives
        t = threading.Thread(target=write, args=(i,))
        t.start()
        rest.append(t)
        wait_for(lambda i=i: d.queued == i, WAIT, what=f"write {i} queued")
    gate.set()
    for t in [first, *rest]:
        t.join(WAIT)
    assert not errors and order == [0, 1, 2, 3, 4]
    st = d.stats()
    assert st["disk_max_inflight"] == 1 and st["disk_max_queued"] == 4
    assert st["disk_writes"] == 5 and st["disk_write_avg_bytes"] == 100
    assert st["disk_waits"] == 4 and st["disk_wait_s"] > 0 and st["disk_queued"] == 0


def test_each_write_holds_the_device_for_the_latency():
    d = DiskDevice(0.02, queue_depth=1)
    threads = [threading.Thread(target=d.write, args=(P, lambda: None)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    st = d.stats()
    # Serialized: the device was busy 6 latencies in all, never two writes at once.
    assert st["disk_writes"] == 6 and st["disk_busy_s"] >= 6 * 0.02
    assert st["disk_max_inflight"] == 1


def test_a_deeper_queue_serves_that_many_at_once():
    d = DiskDevice(0.0, queue_depth=3)
    gate = threading.Event()
    threads = [threading.Thread(target=d.write, args=(1, lambda: gate.wait(WAIT)))
               for _ in range(5)]
    for t in threads:
        t.start()
    wait_for(lambda: d.inflight == 3 and d.queued == 2, WAIT, what="3 in service, 2 queued")
    gate.set()
    for t in threads:
        t.join(WAIT)
    assert d.stats()["disk_max_inflight"] == 3


def test_a_failed_write_frees_its_slot():
    d = DiskDevice(0.0)

    def boom():
        raise OSError(5, "EIO")

    with pytest.raises(OSError):
        d.write(10, boom)
    assert d.write(10, lambda: "ok") == "ok"
    assert d.stats()["disk_writes"] == 2 and d.inflight == 0


def test_bad_settings_refused():
    with pytest.raises(ValueError):
        DiskDevice(-1.0)
    with pytest.raises(ValueError):
        DiskDevice(0.0, queue_depth=0)


# ---------------------------------------------------------------- write modes

@pytest.fixture
def image(tmp_path):
    def make(block_size):
        img = tmp_path / f"w{block_size}.img"
        mkfs(img, 16 << 20, block_size)
        return img
    return make


def data_return_through(fs, npages, seed):
    """A new file of ``npages`` pages whose pages come back dirty in one data_return
    (as a sync's lock_request returns them), served by libpager over the file's ops."""
    root = fs.root()
    node = fs.create(root, f"f{seed}", 0o644)
    fs.grow(node, npages * P)
    data = bytes((i * 7 + seed) % 251 for i in range(npages * P))
    rig = Rig(fs.file_pager_ops(node))
    rig.send(MO.memory_object_data_return, CONTROL, 0, data, True, False)
    assert rig.pager.stats["pages_written"] == npages
    return node, data


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_page_mode_is_one_disk_write_per_page(image, block_size):
    with Ext2(image(block_size)) as ext2:
        fs = Ext2Fs(ext2, write_mode="page")
        node, data = data_return_through(fs, 8, 1)
        st = fs.disk_stats()
        assert st["write_mode"] == "page"
        assert st["disk_writes"] == 8 and st["disk_write_avg_bytes"] == P
        assert fs.stats["write_page_calls"] == 8 and fs.stats["write_pages_calls"] == 0
        assert ext2.read(node.ino, 0, len(data)) == data


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_bulk_mode_writes_contiguous_runs_of_up_to_128_blocks(image, block_size):
    with Ext2(image(block_size)) as ext2:
        fs = Ext2Fs(ext2, write_mode="bulk")
        npages = 64  # 64 to 256 blocks
        node, data = data_return_through(fs, npages, 2)
        st = fs.disk_stats()
        blocks = npages * P // block_size
        # One call; at least one write per 128 blocks, far fewer than pages (the file's
        # blocks are contiguous but for its indirect blocks).
        assert fs.stats["write_pages_calls"] == 1 and fs.stats["write_page_calls"] == 0
        assert -(-blocks // 128) <= st["disk_writes"] <= npages // 8
        assert st["disk_write_avg_bytes"] >= 8 * P
        assert fs.stats["blocks_written"] == blocks
        assert ext2.read(node.ino, 0, len(data)) == data


def test_unknown_write_mode_refused(image):
    with Ext2(image(4096)) as ext2:
        with pytest.raises(ValueError):
            Ext2Fs(ext2, write_mode="chunky")
