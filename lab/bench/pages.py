"""The payloads the bench sends: bytes only, so the floor can use them without importing
anything of machemu."""

from __future__ import annotations

# protocol.vm_param.PAGE_SIZE (checked by a unit test): the floor must not import machemu.
PAGE_BYTES = 4096


def page() -> bytes:
    """The 4 KiB page every round trip and stream carries."""
    return bytes((i * 7 + 3) & 0xFF for i in range(PAGE_BYTES))


def tagged_page(tag: int, index: int) -> bytes:
    """A page that names its file (or chunk) and index, so a misplaced page is caught."""
    head = b"%08x:%08x:" % (tag & 0xFFFFFFFF, index & 0xFFFFFFFF)
    body = bytes(((index * 13 + tag * 7 + i) & 0xFF) for i in range(256))
    return (head + body * (PAGE_BYTES // 256 + 1))[:PAGE_BYTES]
