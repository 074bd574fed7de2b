"""The kernel's VM through the task calls, with real processes: vm_allocate, vm_write,
vm_read, vm_protect, vm_region, vm_deallocate, vm_statistics; map entry counts under both
merge modes (the acceptance behaviours of the VM issue that need no pager)."""

from __future__ import annotations

import os

import pytest

from protocol.defs import mach as MD
from protocol.defs import netname as NS
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel

PAGE = PAGE_SIZE


@pytest.fixture
def vmtask(run_dir, procs, request):
    settings = getattr(request, "param", {})
    rt = TaskRuntime(start_kernel(run_dir, procs, **settings), "vmtask")
    rt.settings = settings
    yield rt
    rt.close()


def regions(rt):
    """Every map entry, by walking vm_region."""
    out, addr = [], 0
    while True:
        try:
            start, size, prot, maxprot, inh, shared, _name, offset = MD.vm_region(
                rt.task_self, addr, rt=rt)
        except MachError as e:
            assert e.code in (K.KERN_NO_SPACE, K.KERN_INVALID_ADDRESS)
            return out
        out.append((start, size, prot))
        addr = start + size


def stats(rt):
    return MD.vm_statistics(rt.task_self, rt=rt)


@pytest.mark.timeout(90)
def test_anonymous_memory_bytes_and_queues(vmtask):
    rt = vmtask
    n = 40
    a = MD.vm_allocate(rt.task_self, 0, n * PAGE, True, rt=rt)
    assert a % PAGE == 0 and a != 0
    assert MD.vm_read(rt.task_self, a, 3 * PAGE, rt=rt) == bytes(3 * PAGE)  # zero-filled
    blobs = {}
    for i in range(n):
        data = os.urandom(PAGE)
        MD.vm_write(rt.task_self, a + i * PAGE, data, rt=rt)
        blobs[i] = data
    # unaligned, page-crossing access
    MD.vm_write(rt.task_self, a + 5 * PAGE - 3, b"abcdefg", rt=rt)
    blobs[4] = blobs[4][:-3] + b"abc"
    blobs[5] = b"defg" + blobs[5][4:]
    for i in range(n):
        assert MD.vm_read(rt.task_self, a + i * PAGE, PAGE, rt=rt) == blobs[i], i
    assert MD.vm_read(rt.task_self, a + 5 * PAGE - 3, 7, rt=rt) == b"abcdefg"
    s = stats(rt)
    assert s["free_count"] + s["active_count"] + s["inactive_count"] + s["wire_count"] \
        == s["physical_pages"]
    assert s["active_count"] + s["inactive_count"] == n
    assert s["zero_fill_count"] == n
    MD.vm_deallocate(rt.task_self, a, n * PAGE, rt=rt)
    s = stats(rt)
    assert s["free_count"] == s["physical_pages"] and s["map_entries"] == 0
    with pytest.raises(MachError) as e:
        MD.vm_read(rt.task_self, a, PAGE, rt=rt)
    assert e.value.code == K.KERN_INVALID_ADDRESS


@pytest.mark.timeout(90)
def test_protection(vmtask):
    rt = vmtask
    a = MD.vm_allocate(rt.task_self, 0, 4 * PAGE, True, rt=rt)
    MD.vm_write(rt.task_self, a, b"x" * PAGE, rt=rt)
    MD.vm_protect(rt.task_self, a, PAGE, False, MD.VM_PROT_READ, rt=rt)
    with pytest.raises(MachError) as e:
        MD.vm_write(rt.task_self, a, b"y", rt=rt)
    assert e.value.code == K.KERN_PROTECTION_FAILURE
    assert MD.vm_read(rt.task_self, a, 1, rt=rt) == b"x"
    MD.vm_protect(rt.task_self, a, PAGE, True, MD.VM_PROT_READ, rt=rt)  # lower the max
    with pytest.raises(MachError) as e:
        MD.vm_protect(rt.task_self, a, PAGE, False, MD.VM_PROT_DEFAULT, rt=rt)
    assert e.value.code == K.KERN_PROTECTION_FAILURE
    MD.vm_protect(rt.task_self, a + PAGE, PAGE, False, MD.VM_PROT_NONE, rt=rt)
    with pytest.raises(MachError) as e:
        MD.vm_read(rt.task_self, a + PAGE, 1, rt=rt)
    assert e.value.code == K.KERN_PROTECTION_FAILURE


@pytest.mark.parametrize("vmtask", [{"map_merge": "classic"}, {"map_merge": "coalesce"}],
                         indirect=True, ids=["classic", "coalesce"])
@pytest.mark.timeout(120)
def test_protect_middle_and_malloc_pattern(vmtask):
    rt = vmtask
    coalesce = rt.settings["map_merge"] == "coalesce"
    a = MD.vm_allocate(rt.task_self, 0, 16 * PAGE, True, rt=rt)
    base = len(regions(rt))
    MD.vm_protect(rt.task_self, a + 4 * PAGE, 4 * PAGE, False, MD.VM_PROT_READ, rt=rt)
    assert len(regions(rt)) == base + 2  # one entry became three
    MD.vm_protect(rt.task_self, a + 4 * PAGE, 4 * PAGE, False, MD.VM_PROT_DEFAULT, rt=rt)
    assert len(regions(rt)) == (base if coalesce else base + 2)
    MD.vm_deallocate(rt.task_self, a, 16 * PAGE, rt=rt)

    # malloc-like: reserve 64 MiB with no access, enable one page at a time
    size = 64 << 20
    r = MD.vm_allocate(rt.task_self, 0, size, True, rt=rt)
    MD.vm_protect(rt.task_self, r, size, False, MD.VM_PROT_NONE, rt=rt)
    steps = 48
    for i in range(steps):
        MD.vm_protect(rt.task_self, r + i * PAGE, PAGE, False, MD.VM_PROT_DEFAULT, rt=rt)
        MD.vm_write(rt.task_self, r + i * PAGE, b"%d" % i, rt=rt)
    entries = stats(rt)["map_entries"]
    if coalesce:
        assert 1 <= entries <= 2
    else:
        assert entries == steps + 1
    assert len(regions(rt)) == entries
    assert MD.vm_read(rt.task_self, r + 7 * PAGE, 1, rt=rt) == b"7"


@pytest.mark.timeout(60)
def test_bad_arguments(vmtask):
    rt = vmtask
    with pytest.raises(MachError) as e:
        MD.vm_allocate(rt.task_self, 0, 0, True, rt=rt)
    assert e.value.code == K.KERN_INVALID_ARGUMENT
    a = MD.vm_allocate(rt.task_self, 0, PAGE, True, rt=rt)
    with pytest.raises(MachError) as e:
        MD.vm_allocate(rt.task_self, a, PAGE, False, rt=rt)  # fixed, overlapping
    assert e.value.code == K.KERN_NO_SPACE
    with pytest.raises(MachError) as e:
        MD.vm_protect(rt.task_self, a, PAGE, False, 0x40, rt=rt)
    assert e.value.code == K.KERN_INVALID_ARGUMENT
    with pytest.raises(MachError) as e:
        MD.vm_read(rt.task_self, 0x7000_0000, PAGE, rt=rt)
    assert e.value.code == K.KERN_INVALID_ADDRESS


@pytest.mark.parametrize("vmtask", [{"map_merge": "classic"}, {"map_merge": "coalesce"}],
                         indirect=True, ids=["classic", "coalesce"])
@pytest.mark.timeout(60)
def test_reallocated_range_reads_zero(vmtask):
    """A range deallocated and allocated again must not show the old object's pages
    (the map extends the neighbouring anonymous object over it: vm_object_coalesce)."""
    rt = vmtask
    a = MD.vm_allocate(rt.task_self, 0, 2 * PAGE, True, rt=rt)
    MD.vm_write(rt.task_self, a, b"A" * (2 * PAGE), rt=rt)
    MD.vm_protect(rt.task_self, a + PAGE, PAGE, False, MD.VM_PROT_READ, rt=rt)
    MD.vm_deallocate(rt.task_self, a + PAGE, PAGE, rt=rt)
    assert MD.vm_allocate(rt.task_self, a + PAGE, PAGE, False, rt=rt) == a + PAGE
    assert MD.vm_read(rt.task_self, a + PAGE, PAGE, rt=rt) == bytes(PAGE)
    assert MD.vm_read(rt.task_self, a, PAGE, rt=rt) == b"A" * PAGE


@pytest.mark.timeout(60)
def test_ool_data_occupies_a_region_until_given_back(tasks):
    """Out-of-line data received in a message is mapped in the receiver's address space
    (vm_map_copyout) and stays there until the receiver deallocates it — which the
    runtime does with the task's next trap."""
    from protocol import message as M
    from protocol.defs import mach_port as P

    a, b = tasks.new("receiver"), tasks.new("observer")
    p = P.mach_port_allocate(a.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=a)
    P.mach_port_insert_right(a.task_self, p, (p, M.MACH_MSG_TYPE_MAKE_SEND), rt=a)
    NS.netname_check_in(a.name_server, "receiver-task", a.task_self, a.task_self, rt=a)
    task_a = NS.netname_look_up(b.name_server, "", "receiver-task", rt=b)
    data = os.urandom(2 * PAGE + 100)
    a.send(M.Message(msgh_id=4242, remote_port=p, remote_disp=M.MACH_MSG_TYPE_COPY_SEND,
                     ool=[data, b"small"]))
    msg = a.receive(p, timeout=10)
    assert bytes(msg.ool[0]) == data and bytes(msg.ool[1]) == b"small"
    addr = msg.ool_addrs[0]
    assert addr and msg.ool_addrs[1] == 0  # less than a page travels inline only
    start, size, *_ = MD.vm_region(task_a, addr, rt=b)
    assert (start, size) == (addr, 3 * PAGE)
    assert MD.vm_read(task_a, addr, len(data), rt=b) == data
    P.mach_port_type(a.task_self, p, rt=a)  # any trap gives the region back
    try:
        start, size, *_ = MD.vm_region(task_a, addr, rt=b)
        assert start > addr
    except MachError as e:
        assert e.code == K.KERN_NO_SPACE


@pytest.mark.parametrize("vmtask", [{"physical_pages": 256}], indirect=True, ids=["256"])
@pytest.mark.timeout(90)
def test_out_of_memory_without_default_pager_waits_but_kernel_serves(vmtask, tasks_of):
    """With no default pager, dirty anonymous memory cannot be paged out: a writer past
    physical memory waits for free pages (its call times out), while the kernel keeps
    serving everyone else (the pageout scan must not spin)."""
    rt = vmtask
    a = MD.vm_allocate(rt.task_self, 0, 400 * PAGE, True, rt=rt)
    with pytest.raises(MachError) as e:
        for i in range(400):
            MD.vm_write(rt.task_self, a + i * PAGE, b"x" * PAGE, rt=rt, timeout=3)
    assert e.value.code in (0x10004003, 0x10000004)  # MACH_RCV_TIMED_OUT / SEND_TIMED_OUT
    other = tasks_of(rt)
    s = MD.vm_statistics(other.task_self, rt=other, timeout=10)
    assert s["free_count"] < 64 and s["page_waits"] >= 1


@pytest.fixture
def tasks_of():
    made = []

    def new(rt):
        t = TaskRuntime(rt.endpoint, "other")
        made.append(t)
        return t

    yield new
    for t in made:
        t.close()


@pytest.mark.timeout(180)
def test_hostile_vm_calls_get_errors_and_the_kernel_goes_on(tasks):
    """Random addresses, sizes and protections for every VM call: each gets a reply
    (success or a Mach error), the kernel hits no internal error and still serves."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from protocol.defs import machemu as X

    rt = tasks.new("hostile")
    big = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(
        [0, 1, PAGE - 1, PAGE, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 0xC0000000, 0xBFFFF000]))
    small = st.integers(0, 2**32 - 1)
    calls = st.one_of(
        st.tuples(st.just(MD.vm_allocate), big, big, st.booleans()),
        st.tuples(st.just(MD.vm_deallocate), big, big),
        st.tuples(st.just(MD.vm_protect), big, big, st.booleans(), small),
        st.tuples(st.just(MD.vm_inherit), big, big, small),
        st.tuples(st.just(MD.vm_read), big, st.integers(0, 3 * PAGE)),
        st.tuples(st.just(MD.vm_write), big, st.binary(max_size=2 * PAGE)),
        st.tuples(st.just(MD.vm_copy), big, st.integers(0, 3 * PAGE), big),
        st.tuples(st.just(MD.vm_region), big),
        st.tuples(st.just(MD.vm_map), big, big, big, st.booleans(), st.just(0), big,
                  st.booleans(), small, small, small),
    )

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(calls)
    def one(call):
        routine, *args = call
        try:
            routine(rt.task_self, *args, rt=rt, timeout=30)
        except MachError as e:
            assert e.code != K.KERN_FAILURE, (routine.name, args)  # KERN_FAILURE: a kernel bug

    one()
    info = X.machemu_kernel_info(rt.host, rt=rt, timeout=30)
    assert info["stats"].get("internal_errors", 0) == 0
    a = MD.vm_allocate(rt.task_self, 0, PAGE, True, rt=rt)
    MD.vm_write(rt.task_self, a, b"ok", rt=rt)
    assert MD.vm_read(rt.task_self, a, 2, rt=rt) == b"ok"
