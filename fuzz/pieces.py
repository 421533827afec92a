"""How the fuzz targets cut one input stream into reads: the same bytes must parse the same
however they arrive, so each target feeds them in pieces whose sizes come from a seed."""
from __future__ import annotations

import random

MAX_PIECES = 128


def cut(stream: bytes, seed: int) -> list[bytes]:
    """`stream` in pieces whose sizes come from `seed` (seed 0: one byte at a time), at
    most MAX_PIECES or so (pieces grow with the stream: each one is a feed to pay for)."""
    if seed == 0 and len(stream) <= MAX_PIECES:
        return [stream[i:i + 1] for i in range(len(stream))]
    rng = random.Random(seed)
    top = max(1 << (seed % 12), 2 * len(stream) // MAX_PIECES)
    pieces = []
    pos = 0
    while pos < len(stream):
        size = rng.randint(1, top)
        pieces.append(stream[pos:pos + size])
        pos += size
    return pieces
