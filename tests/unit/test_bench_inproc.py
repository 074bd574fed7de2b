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
    assert '"routed": 40' in out


def test_main_refuses_zero():
    with pytest.raises(SystemExit):
        inproc.main(["0"])
