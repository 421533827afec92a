"""Masking of WebSocket payloads (RFC 6455 section 5.3).

`apply_mask(data, mask)` XORs `data` with the 4-byte `mask` repeated, and returns bytes.
The C accelerator (`_mask`, built by the package's install when a compiler is present) is
used when it imports, unless the environment variable ``TETHER_PURE_PYTHON`` is set;
`pure_apply_mask` is the portable fallback and is always available for tests.
"""

import os
from collections.abc import Callable

__all__ = ["apply_mask", "pure_apply_mask", "ACCELERATED"]


def pure_apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR `data` with the repeated 4-byte `mask`, using Python's big integers."""
    if len(mask) != 4:
        raise ValueError("mask must be exactly 4 bytes")
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


apply_mask: Callable[[bytes, bytes], bytes] = pure_apply_mask
ACCELERATED = False
if not os.environ.get("TETHER_PURE_PYTHON"):
    try:
        from ._mask import apply_mask
        ACCELERATED = True
    except ImportError:  # no compiler at install time: the pure path serves
        pass
