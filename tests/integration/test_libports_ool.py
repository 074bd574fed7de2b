"""Out-of-line data a libports server receives is the server's until its handler is
done (DESIGN §4: it occupies a region of the receiver's map until the receiver
vm_deallocates it): the server loops receive with keep_ool and give the regions back
only after the handler returned, so traps the handler makes meanwhile (here a
vm_statistics and the vm_region that looks) leave the region mapped; afterwards it goes,
and none is left behind after a burst.  Against a real kernel, both thread models."""

from __future__ import annotations

import threading

import pytest

from protocol.defs import demo as D
from protocol.defs import mach as MD
from protocol.defs import netname as NS
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from translators import libports as LP

MODELS = ["multithread", "workers"]


def mapped(rt, addr) -> bool:
    """Is ``addr`` the start of a region of rt's own map?"""
    try:
        start, *_ = MD.vm_region(rt.task_self, addr, timeout=10, rt=rt)
    except MachError as e:
        assert e.code == KernReturn.KERN_NO_SPACE
        return False
    return start == addr


class LookingDemuxer(LP.PortsDemuxer):
    """Before serving, the serving thread makes a trap of its own, then looks whether
    each of the request's out-of-line regions is still mapped."""

    def __init__(self, bucket, handlers, rt):
        super().__init__(bucket, handlers)
        self.rt = rt
        self.seen: list[tuple[int, bool]] = []
        self.lock = threading.Lock()

    def serve(self, msg):
        for addr in msg.ool_addrs:
            if addr:
                MD.vm_statistics(self.rt.task_self, timeout=10, rt=self.rt)
                with self.lock:
                    self.seen.append((addr, mapped(self.rt, addr)))
        return super().serve(msg)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("model", MODELS)
def test_request_ool_is_mapped_while_the_handler_runs_and_given_back_after(tasks, model):
    rt = tasks.new("libports")
    bucket = LP.ports_create_bucket(rt)
    pi = LP.ports_create_port(LP.ports_create_class(), bucket)
    name = LP.ports_get_send_right(pi)
    LP.ports_port_deref(pi)
    demuxer = LookingDemuxer(bucket, {D.demo_echo: lambda obj, data: bytes(data)}, rt)
    server = LP.make_server(model, bucket, demuxer, thread_timeout=5, workers=3,
                            stack_size=None, name="ool", vm_stacks=False).start()
    entries0 = MD.vm_statistics(rt.task_self, rt=rt)["map_entries"]
    try:
        NS.netname_check_in(rt.name_server, f"ool-{model}", rt.task_self, name,
                            timeout=10, rt=rt)
        client = tasks.new("client")
        port = NS.netname_look_up(client.name_server, "", f"ool-{model}", timeout=10,
                                  rt=client)
        errors = []

        def echo(i):
            data = bytes([i]) * (16 * PAGE_SIZE + 7)
            try:
                for _ in range(4):
                    assert D.demo_echo(port, data, timeout=30, rt=client) == data
            except (MachError, AssertionError) as e:
                errors.append(e)
            finally:
                client.thread_exit()

        threads = [threading.Thread(target=echo, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
        assert len(demuxer.seen) == 24
        assert all(ok for _, ok in demuxer.seen), demuxer.seen
        # Every region goes back with a trap after its handler: none is left (one more
        # trap of this task carries whatever is still queued).
        wait_for(lambda: not any(mapped(rt, a) for a, _ in demuxer.seen), 30,
                 what="the request regions given back")
        assert MD.vm_statistics(rt.task_self, rt=rt)["map_entries"] == entries0
    finally:
        assert server.stop(timeout=20)
