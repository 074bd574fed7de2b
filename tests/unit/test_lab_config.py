"""lab.config: the cluster config's [kernel] table and [[server]] list."""

from __future__ import annotations

import pytest

from lab.config import DEFAULT_SERVERS, RUN_KERNEL, ConfigError, load_config


def write(run_dir, text):
    path = run_dir / "c.toml"
    path.write_text(text)
    return str(path)


def test_no_config_is_the_default_servers():
    kernel, servers = load_config(None)
    assert kernel is None
    assert [s["name"] for s in servers] == ["defpager", "ext2fs", "memfs", "demo"]
    assert servers[0]["role"] == "default-pager"
    servers[0]["args"].append("--x")  # a copy: the defaults stay as they are
    assert DEFAULT_SERVERS[0]["args"] == []
    assert RUN_KERNEL == {"physical_pages": 2048, "data_return_cluster": 32}


def test_kernel_table_and_servers(run_dir):
    path = write(run_dir, '[kernel]\nqlimit_default = 7\n'
                 '[[server]]\nname = "pager"\nmodule = "translators.defpager"\n'
                 'role = "default-pager"\n'
                 '[[server]]\nname = "demo"\nmodule = "translators.demo"\n'
                 'args = ["--threads", "workers"]\n')
    kernel, servers = load_config(path)
    assert kernel == {"qlimit_default": 7}
    assert servers == [
        {"name": "pager", "module": "translators.defpager", "args": [],
         "role": "default-pager"},
        {"name": "demo", "module": "translators.demo", "args": ["--threads", "workers"],
         "role": "server"}]


def test_empty_server_list_and_no_server_key(run_dir):
    assert load_config(write(run_dir, "server = []\n")) == (None, [])
    kernel, servers = load_config(write(run_dir, "[kernel]\nmax_tasks = 8\n"))
    assert kernel == {"max_tasks": 8} and [s["name"] for s in servers] == [
        s["name"] for s in DEFAULT_SERVERS]


@pytest.mark.parametrize("text,message", [
    ("x = [\n", "config {path}: "),
    ("[foo]\n[bar]\n", "config {path}: unknown table(s) bar, foo"),
    ("kernel = 3\n", "config {path}: [kernel] must be a table"),
    ("server = 3\n", "config {path}: server must be a list of tables ([[server]])"),
    ("server = [3]\n", "config {path}: server #1 is not a table"),
    ('[[server]]\nname = "a"\nmodule = "m"\nfoo = 1\nbar = 2\n',
     "config {path}: server #1: unknown key(s) bar, foo"),
    ('[[server]]\nname = "kernel"\nmodule = "m"\n',
     "config {path}: server #1: bad or reserved name 'kernel'"),
    ('[[server]]\nname = "a b"\nmodule = "m"\n',
     "config {path}: server #1: bad or reserved name 'a b'"),
    ('[[server]]\nmodule = "m"\n', "config {path}: server #1: bad or reserved name None"),
    ('[[server]]\nname = "a"\nmodule = "m"\n[[server]]\nname = "a"\nmodule = "m"\n',
     "config {path}: server #2: name 'a' used twice"),
    ('[[server]]\nname = "a"\nmodule = "1m"\n', "config {path}: server #1: bad module '1m'"),
    ('[[server]]\nname = "a"\nmodule = "m"\nargs = [1]\n',
     "config {path}: server #1: args must be a list of strings"),
    ('[[server]]\nname = "a"\nmodule = "m"\nargs = "x"\n',
     "config {path}: server #1: args must be a list of strings"),
    ('[[server]]\nname = "a"\nmodule = "m"\nrole = ""\n',
     "config {path}: server #1: bad role ''"),
])
def test_refused(run_dir, text, message):
    path = write(run_dir, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(message.format(path=path)), str(e.value)


def test_unreadable(run_dir):
    path = str(run_dir / "missing.toml")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"cannot read config {path}: No such file or directory"
