"""The advisory pageout policy on a real cluster: two client tasks write files through
their own ext2fs mappings with a hard dirty limit far below what they write.  Writers
sleep on vm_page_too_dirty until ext2fs's periodic sync cleans pages; the kernel's peak
of potentially dirty pages stays within the hard limit plus the writers in flight, and
every byte reads back through ext2fs.

With soft == hard no PAGE_SIZE + 1 hint is sent and the periodic sync does the cleaning.
With soft < hard and no periodic sync, only the hints clean: each one past the soft
limit makes libpager ask the object's dirty pages back (pager_sync without waiting), so
the writers get through (mostly without sleeping) only if the hint is acted on."""

from __future__ import annotations

import threading

import pytest

from protocol.defs import fs as F
from protocol.defs import mach as MD
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel
from tests.integration.test_ext2fs_translator import Client, pattern, start_ext2fs

HARD = 40
WRITERS = 2
NPAGES = 160  # per writer: four times the hard limit


@pytest.mark.timeout(240)
@pytest.mark.parametrize("soft,sync_interval", [(HARD, "0.3"), (HARD // 2, "0")],
                         ids=["sync-cleans", "hints-clean"])
def test_writers_sleep_at_the_hard_limit_and_every_byte_survives(run_dir, procs, soft,
                                                                 sync_interval):
    endpoint = start_kernel(run_dir, procs, pageout_policy="advisory", physical_pages=1024,
                            advisory_soft_limit=soft, advisory_hard_limit=HARD)
    start_ext2fs(procs, run_dir, "--size-mib", "16", "--sync-interval", sync_interval)
    size = NPAGES * PAGE_SIZE
    datas = [pattern(size, seed=w + 1) for w in range(WRITERS)]
    errors = []

    def writer(w):
        rt = TaskRuntime(endpoint, f"writer{w}")
        try:
            c = Client(rt)
            f = c.open(f"f{w}", F.O_CREAT | F.O_READ | F.O_WRITE)
            c.call(F.file_set_size, f, size)
            _rd, wt = c.call(F.io_map, f)
            addr = MD.vm_map(rt.task_self, 0, size, 0, True, wt, 0, False,
                             MD.VM_PROT_DEFAULT, MD.VM_PROT_ALL, MD.VM_INHERIT_NONE,
                             rt=rt, timeout=30)
            for i in range(NPAGES):
                MD.vm_write(rt.task_self, addr + i * PAGE_SIZE,
                            datas[w][i * PAGE_SIZE:(i + 1) * PAGE_SIZE], rt=rt, timeout=60)
            MD.vm_deallocate(rt.task_self, addr, size, rt=rt)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append((w, exc))
        finally:
            rt.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads) and not errors, errors

    rt = TaskRuntime(endpoint, "checker")
    s = MD.vm_statistics(rt.task_self, rt=rt)
    po = s["pageout"]
    if soft == HARD:  # only the periodic sync cleans: writers must wait for it
        assert s["dirty_sleeps"] > 0 and s["dirty_sleep_seconds"] > 0, s
        assert HARD < po["dirty_peak"] <= HARD + WRITERS, po
    else:  # the hints' writebacks clean as the writers go: the count stays near soft
        assert soft < po["dirty_peak"] <= HARD + WRITERS, po
    assert s["dirty_sleeping"] == 0, s
    assert (s["unlock_hints"] > 0) == (soft < HARD), s
    assert s["data_unlocks"] >= WRITERS * NPAGES, s
    c = Client(rt)
    for w in range(WRITERS):
        f = c.open(f"f{w}", F.O_READ)
        assert c.read_all(f, size) == datas[w], w
    rt.close()
