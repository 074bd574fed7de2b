"""lab.bench.inproc: the kernel's routed path driven in process, on a real kernel and
real sockets."""

import pytest

from lab.bench import inproc

pytestmark = pytest.mark.timeout(60)


def test_routed_path_delivers_every_message_and_gives_regions_back():
    r = inproc.measure(300)
    assert r["delivered"] == inproc.WARM + 300
    assert r["kernel_us_per_msg"] > 0
    # each delivered page was mapped in the receiver, then given back by its next trap
    assert r["receiver_map_entries"] < 16


def test_profile_names_the_kernel_routines():
    r = inproc.measure(50, profile=True)
    assert "mach_msg_trap" in r["profile"] and "deliver" in r["profile"]


def test_main_json(capsys):
    assert inproc.main(["40", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"path": "routed"' in out and '"calls": 40' in out


def test_vm_read_path_reads_the_page_and_gives_each_region_back():
    """Each vm_read's reply region is mapped in the caller and given back by the next
    trap; read checks every reply's bytes against the page written."""
    r = inproc.measure(200, path_name="vm_read")
    assert r["path"] == "vm_read" and r["kernel_us_per_msg"] > 0
    # the page read and the last reply regions; the earlier ones were given back
    assert r["receiver_map_entries"] <= 3


def test_main_refuses_zero():
    with pytest.raises(SystemExit):
        inproc.main(["0"])
