"""permessage-deflate on the native server (RFC 7692; the rules are in protocol/deflate.py).

`open_channel` negotiates the client's offer against the `permessage_deflate` setting and
returns a plain `NativeChannel`, or a `DeflateChannel` that inflates what the client sends
(through the frame parser) and compresses what it is sent.

Compressing once for a broadcast: under `server_no_context_takeover` (tether's default) a
message is compressed independently of the ones before it, so every connection whose
negotiated parameters compress alike shares one `SharedFrameCompressor` (from the server's
`CompressorPool`, protocol/deflate.py), which keeps the frame it made last. The hub hands
the same payload object to each receiver of a broadcast, publish or send_to, so receivers
2..N get the first one's frame by an identity check. With context takeover each connection
has its own `FrameCompressor` and every message is compressed per connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..protocol.deflate import Decompressor, DeflateParams, FrameCompressor, negotiate
from .channel import NativeChannel

if TYPE_CHECKING:
    from .state import ServerContext

__all__ = ["open_channel", "DeflateChannel"]


class DeflateChannel(NativeChannel):
    """A native channel with permessage-deflate negotiated: the response names the agreed
    parameters, the parser inflates compressed messages (bounded by `max_message_size`
    while inflating), and data messages leave through the connection's compressor."""

    def __init__(self, server: ServerContext, transport: asyncio.Transport, key: str, leftover: bytes,
                 params: DeflateParams, compressor: FrameCompressor) -> None:
        super().__init__(server, transport, key, leftover)
        self._extension = params.header()
        self._parser.inflater = Decompressor(params)
        self._compressor = compressor

    def write_accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        super().write_accept(subprotocol, [("Sec-WebSocket-Extensions", self._extension), *headers])

    def write_frame(self, frame: bytes, opcode: int, payload: bytes) -> None:
        if opcode < 8:  # control frames are never compressed (RFC 7692 6.1)
            frame = self._compressor.frame(opcode, payload)
        NativeChannel.write_frame(self, frame, opcode, payload)


def open_channel(server: ServerContext, transport: asyncio.Transport, key: str, leftover: bytes,
                 extensions: str | None) -> NativeChannel:
    """The channel for a validated upgrade request whose Sec-WebSocket-Extensions header is
    `extensions`. HandshakeError (400) for a malformed header when compression is enabled;
    an offer tether cannot accept leaves the connection uncompressed."""
    pool = server.compressors
    if pool is not None and extensions:
        params = negotiate(extensions, pool.options)
        if params is not None:
            return DeflateChannel(server, transport, key, leftover, params, pool.for_connection(params))
    return NativeChannel(server, transport, key, leftover)
