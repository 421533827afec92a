"""Sans-I/O WebSocket protocol: bytes in, events and bytes out. Imports nothing of tether."""

from .connection import Connection, ConnectionState, Side
from .deflate import Compressor, Decompressor, DeflateOptions, DeflateParams, negotiate, parse_extensions
from .errors import HandshakeError, ProtocolError, TetherError
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PROTOCOL_ERROR,
    RSV1,
    FrameEvent,
    FrameParser,
    encode_close,
    encode_frame,
    is_valid_close_code,
    message_too_big,
    parse_close_payload,
)
from .handshake import (
    accept_headers,
    accept_key,
    header_tokens,
    is_upgrade_request,
    origin_allowed,
    select_subprotocol,
    validate_upgrade,
)
from .masking import ACCELERATED, apply_mask, pure_apply_mask

__all__ = [
    "Connection", "ConnectionState", "Side",
    "OP_BINARY", "OP_CLOSE", "OP_CONTINUATION", "OP_PING", "OP_PONG", "OP_TEXT",
    "PROTOCOL_ERROR", "RSV1", "FrameEvent", "FrameParser", "ProtocolError", "HandshakeError", "TetherError",
    "encode_close", "encode_frame", "is_valid_close_code", "message_too_big",
    "parse_close_payload", "accept_headers", "accept_key", "header_tokens",
    "is_upgrade_request", "origin_allowed", "select_subprotocol", "validate_upgrade",
    "ACCELERATED", "apply_mask", "pure_apply_mask",
    "DeflateOptions", "DeflateParams", "negotiate", "parse_extensions", "Compressor", "Decompressor",
]
