"""Settings shared by every road in (native server, test client, later ASGI)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Settings"]


@dataclass
class Settings:
    """Limits and protocol options; each is a keyword of `App(...)` and a `--flag` of the CLI.

    - `max_message_size`: largest WebSocket message accepted, in bytes (past it: close 1009),
      counted after decompression and across fragments.
    - `permessage_deflate`: RFC 7692 compression: False (the default), True (tether's
      defaults), or a mapping of options (see `tether.protocol.deflate.DeflateOptions`).
    - `ping_interval` / `ping_timeout`: seconds between server pings, and how long a pong may
      take before the connection is closed with 1011 (0 disables keepalive).
    - `allowed_origins`: browser Origins accepted besides the server's own host (`["*"]`: all).
    - `max_send_buffer`: bytes a connection may have queued for a client that does not read;
      past it the connection is closed with 1008 (or awaited sends wait, see `slow_client`).
    - `slow_client`: "close" (the default: a client past `max_send_buffer` is closed with
      1008) or "wait" (awaited sends and deliveries wait for the buffer to drain, up to
      `send_timeout`; deliveries nobody awaits still close past a hard cap).
    - `max_queue`: received messages a handler may leave unread before reading pauses.
    - `shutdown_timeout`: seconds handlers get to finish after SIGINT/SIGTERM.
    - `max_body_size`, `max_header_size`: HTTP request limits (413, 431).
    - `handshake_timeout`, `close_timeout`, `keepalive_timeout`: seconds for a request's
      headers to arrive, for the peer to answer a close frame, and for an idle keep-alive
      HTTP connection.
    - `loop_lag_warning`: log a WARNING naming the handler when the event loop was blocked
      longer than this many seconds (native server; 0 disables the watchdog).
    - `backplane`: how the hub reaches other processes and hosts: None (this process only;
      the `TETHER_BACKPLANE` environment variable is used when set), `redis://host:6379/0`,
      `rediss://...` (TLS), `unix:///path/redis.sock`, or `memory://NAME` (Apps of one
      process; for tests). See docs/scaling.md.
    """

    max_message_size: int = 1 << 20
    permessage_deflate: bool | dict[str, Any] = False
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    allowed_origins: list[str] = field(default_factory=list)
    max_send_buffer: int = 4 << 20
    slow_client: str = "close"
    max_queue: int = 32
    shutdown_timeout: float = 10.0
    max_body_size: int = 16 << 20
    max_header_size: int = 64 << 10
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    keepalive_timeout: float = 5.0
    loop_lag_warning: float = 0.25
    backplane: str | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_send_buffer", "max_queue", "max_body_size", "max_header_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive number of bytes/messages, got {getattr(self, name)!r}")
        for name in ("ping_interval", "ping_timeout", "shutdown_timeout", "handshake_timeout",
                     "close_timeout", "keepalive_timeout", "loop_lag_warning"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if self.slow_client not in ("close", "wait"):
            raise ValueError(f'slow_client must be "close" or "wait", got {self.slow_client!r}')
        # Typed list[str], but App(allowed_origins="https://example.com") passes one str.
        origins: Any = self.allowed_origins
        if isinstance(origins, str):
            origins = [origins]
        self.allowed_origins = list(origins)
