"""Machine-independent VM parameters, as GNU Mach's ``mach/vm_param.h`` and
``i386/include/mach/i386/vm_param.h`` give them: one page size for every process.
"""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT  # vm_page_size
PAGE_MASK = PAGE_SIZE - 1
# i386 GNU Mach user address space (VM_MIN_ADDRESS, VM_MAX_ADDRESS).
VM_MIN_ADDRESS = 0
VM_MAX_ADDRESS = 0xC0000000


def trunc_page(x: int) -> int:
    """trunc_page: ``x`` rounded down to a page boundary."""
    return x & ~PAGE_MASK


def round_page(x: int) -> int:
    """round_page: ``x`` rounded up to a page boundary."""
    return (x + PAGE_MASK) & ~PAGE_MASK
