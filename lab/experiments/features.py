"""What this tree offers a configuration: its pageout policies (the kernel's POLICIES),
its [kernel] keys (KernelConfig's fields) and ext2fs's options (what
``python -m translators.ext2fs --help`` lists).  A configuration that needs something
absent is reported "not available" with the reason, and the rest still run."""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import fields

from lab.process import ROOT, child_env, python_argv

HELP_TIMEOUT = 60.0  # a loaded 2-core machine imports slowly
OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def parse_options(help_text: str) -> set[str]:
    """The long options (``--name``) a program's --help text mentions."""
    return set(OPTION_RE.findall(help_text))


@functools.lru_cache(maxsize=None)
def server_options(module: str) -> frozenset[str]:
    """The long options of ``python -m MODULE --help`` (empty if it cannot say)."""
    try:
        r = subprocess.run(python_argv(module, "--help"), capture_output=True, text=True,
                           timeout=HELP_TIMEOUT, env=child_env(), cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(parse_options(r.stdout))


def policies() -> set[str]:
    """The pageout policies the kernel knows (kernel.vm_pageout.POLICIES)."""
    from kernel.vm_pageout import POLICIES

    return set(POLICIES)


def kernel_keys() -> set[str]:
    """The [kernel] keys the kernel accepts (kernel.config.KernelConfig)."""
    from kernel.config import KernelConfig

    return {f.name for f in fields(KernelConfig)}


def missing(needs: dict, have_policies: set[str], have_keys: set[str],
            have_options: set[str]) -> list[str]:
    """What of ``needs`` (Configuration.needs) is absent, each as a reason; [] if
    nothing."""
    out = []
    if needs["policy"] not in have_policies:
        out.append(f"pageout policy {needs['policy']!r} not in this kernel "
                   f"(has {', '.join(sorted(have_policies))})")
    keys = [k for k in needs["kernel_keys"] if k not in have_keys]
    if keys:
        out.append("kernel setting(s) " + ", ".join(keys) + " not in this kernel")
    opts = [o for o in needs["ext2fs_options"] if o not in have_options]
    if opts:
        out.append("ext2fs option(s) " + ", ".join(opts) + " not in this ext2fs")
    return out


def unavailable(config, module: str = "translators.ext2fs") -> str | None:
    """Why ``config`` cannot run on this tree ("not available: ..."), or None."""
    reasons = missing(config.needs(), policies(), kernel_keys(), set(server_options(module)))
    return "not available: " + "; ".join(reasons) if reasons else None
