"""libpager never waits without bound for the kernel: lock_request and
change_attributes are simpleroutines, so a request the kernel refused or lost is never
answered; a synchronous wait without a timeout ends at the pager's reply_deadline, is
logged and counted, and reports failure."""

from __future__ import annotations

import threading

import pytest

from tests.unit.test_libpager import WAIT, Ops, rigs  # noqa: F401 - rigs is a fixture
from translators import libpager as PG

pytestmark = pytest.mark.timeout(30)


def test_sync_without_timeout_ends_at_reply_deadline(rigs):  # noqa: F811
    r = rigs(Ops())
    r.pager.reply_deadline = 0.3
    result = []
    t = threading.Thread(target=lambda: result.append(PG.pager_sync(r.pager)), daemon=True)
    t.start()
    r.kernel.wait_for("lock_request")
    t.join(WAIT)
    assert not t.is_alive(), "pager_sync waited past its deadline"
    assert result == [False]
    assert PG.pager_stats(r.pager)["reply_timeouts"] == 1
    assert r.pager.lock_requests == []


def test_change_attributes_wait_ends_at_reply_deadline(rigs):  # noqa: F811
    r = rigs(Ops())
    r.pager.reply_deadline = 0.3
    done = []
    t = threading.Thread(target=lambda: done.append(
        PG.pager_change_attributes(r.pager, True, r.pager.copy_strategy, wait=True)),
        daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive() and done == [False]
    assert r.pager.attribute_requests == []


def test_flush_of_a_terabyte_object_costs_what_is_in_core(rigs):  # noqa: F811
    """pager_flush over a 1.5 TiB extent clears the in-core pages it knows of without
    stepping through 400 million page indices."""
    from protocol.defs import memory_object as MO
    from protocol.vm_param import PAGE_SIZE
    from tests.unit.test_libpager import CONTROL

    huge = 3 << 39
    r = rigs(Ops(size=huge))
    r.send(MO.memory_object_data_request, CONTROL, 2 * PAGE_SIZE, PAGE_SIZE, 1)
    assert r.pager.pagemap[2] & PG.PM_INCORE
    r.kernel.on_lock_request = lambda offset, size: r.in_thread(
        MO.memory_object_lock_completed, CONTROL, offset, size)
    assert PG.pager_flush(r.pager, wait=True, timeout=WAIT) is True
    assert not r.pager.pagemap[2] & PG.PM_INCORE
