"""Bit operations on block and inode bitmaps (the Hurd's ext2fs/bitmap.c, included by
balloc.c and ialloc.c).  Bit ``i`` is bit ``i & 7`` of byte ``i >> 3``."""

from __future__ import annotations

import re

_NOT_FF = re.compile(rb"[^\xff]")


def _lowest_zero(b: int) -> int:
    return ((~b) & (b + 1)).bit_length() - 1


def find_next_zero_bit(bm, start: int, nbits: int) -> int:
    """find_next_zero_bit: the first clear bit of ``bm`` at or after ``start`` and below
    ``nbits``; -1 if there is none."""
    if start >= nbits:
        return -1
    byte = start >> 3
    b = bm[byte] | ((1 << (start & 7)) - 1)
    if b != 0xFF:
        bit = (byte << 3) + _lowest_zero(b)
        return bit if bit < nbits else -1
    m = _NOT_FF.search(bm, byte + 1, (nbits + 7) >> 3)  # whole 0xff bytes at C speed
    if m is None:
        return -1
    pos = m.start()
    bit = (pos << 3) + _lowest_zero(bm[pos])
    return bit if bit < nbits else -1


def set_bit(bm: bytearray, bit: int) -> bool:
    """set_bit: set ``bit``; whether it was set before."""
    mask = 1 << (bit & 7)
    old = bool(bm[bit >> 3] & mask)
    bm[bit >> 3] |= mask
    return old


def clear_bit(bm: bytearray, bit: int) -> bool:
    """clear_bit: clear ``bit``; whether it was set before."""
    mask = 1 << (bit & 7)
    old = bool(bm[bit >> 3] & mask)
    bm[bit >> 3] &= ~mask
    return old
