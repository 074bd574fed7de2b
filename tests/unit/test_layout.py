"""The tree's shape (DESIGN §1): layering between the packages, no import cycle across
subsystems, no file over 800 lines, scripts as thin shims over ``lab``, nothing imported
through ``sys.path``.  Read from the sources with ``ast``, so it holds for lazy imports too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("protocol", "kernel", "translators", "lab")
# What each package must never import (DESIGN §1).
NEVER = {"protocol": {"kernel", "translators", "lab"}, "kernel": {"translators", "lab"},
         "translators": {"kernel", "lab"}, "lab": set()}
MAX_LINES = 800
SHIM_MAX_LINES = 15
# kernel modules by the GNU Mach directory their routines come from
KERNEL_IPC = {"mach_msg", "mach_port"}
KERNEL_VM = {"memory_object", "rbtree"}


def _modules() -> dict[str, Path]:
    mods = {}
    for top in PACKAGES:
        for f in (ROOT / top).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The modules of this tree that ``mod`` imports, anywhere in its source."""

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(filter(None, (known(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in mods else known(base))
    out.discard(None)
    out.discard(mod)
    return out


def subsystem(mod: str) -> str:
    """The subsystem a module belongs to: kernel's ipc and vm as GNU Mach's ipc/ and vm/
    directories, a translator or lab tool by its package, otherwise the module."""
    parts = mod.split(".")
    if parts[0] == "kernel" and len(parts) > 1:
        name = parts[1]
        if name.startswith("ipc_") or name in KERNEL_IPC:
            return "kernel.ipc"
        if name.startswith("vm_") or name in KERNEL_VM:
            return "kernel.vm"
    return ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(old)
    return out


def test_strongly_connected_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(g) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_layering():
    bad = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
           if d.split(".")[0] in NEVER[m.split(".")[0]]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_across_subsystems():
    cycles = [c for c in strongly_connected(_graph()) if len({subsystem(m) for m in c}) > 1]
    assert not cycles, f"import cycles across subsystems: {cycles}"


def test_no_file_over_800_lines():
    files = [*ROOT.glob("scripts/*"), *ROOT.glob("tests/**/*.py"),
             *(f for top in PACKAGES for f in (ROOT / top).rglob("*.py"))]
    long = {str(f.relative_to(ROOT)): n for f in files if f.is_file()
            and (n := len(f.read_bytes().splitlines())) > MAX_LINES}
    assert not long, long


def test_scripts_are_shims_over_lab():
    for f in ROOT.glob("scripts/*"):
        if not f.is_file():
            continue
        text = f.read_text()
        tree = ast.parse(text, str(f))
        tops = {(n.module or "").split(".")[0] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)}
        tops |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
        assert "lab" in tops, f"{f.name} does not run lab code"
        assert not tops & {"protocol", "kernel", "translators"}, f"{f.name}: {tops}"
        code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert len(code) <= SHIM_MAX_LINES, f"{f.name}: {len(code)} lines of code"


def test_nothing_imports_through_sys_path():
    files = [*ROOT.glob("scripts/*"), *ROOT.glob("tests/**/*.py"),
             *(f for top in PACKAGES for f in (ROOT / top).rglob("*.py"))]
    hits = [str(f.relative_to(ROOT)) for f in files if f.is_file()
            and f.resolve() != Path(__file__).resolve()
            and "sys.path.insert" in f.read_text(errors="replace")]
    assert not hits, hits
