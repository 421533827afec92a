"""Settings shared by every road in (native server, test client, later ASGI)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .exceptions import MissingExtra
from .protocol.deflate import DeflateOptions

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
      past it a delivery closes the connection with 1008 (or waits, see `slow_client`).
    - `slow_client`: "close" (the default: a delivery to a client past `max_send_buffer` closes
      it with 1008) or "wait" (an awaited broadcast/publish/send_to waits until the client's
      buffer is back under `max_send_buffer`, up to `send_timeout`, then closes it with 1008;
      deliveries nobody awaits, which cannot wait, close past twice `max_send_buffer`). A
      connection's own `send_*` waits for its client in both modes. See `tether.channel`.
    - `send_timeout`: seconds an awaited delivery waits for one client's buffer to drain in
      "wait" mode before closing that client (1008); must be > 0.
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
    - `metrics_path`: serve Prometheus metrics at this path (e.g. "/metrics"; None, the
      default: no metrics, nothing counted). Needs `pip install 'tether[metrics]'` (else
      MissingExtra).
    - `health_path`: serve a readiness check at this path (e.g. "/healthz"): 200 while the
      app serves, 503 once shutdown began. See docs/operations.md.
    - `shutdown_delay`: seconds to go on serving after SIGINT/SIGTERM, with the readiness
      check answering 503, before the shutdown proper (so a load balancer can take the
      instance out first; a second signal cuts it short). 0 by default.
    """

    max_message_size: int = 1 << 20
    permessage_deflate: bool | dict[str, Any] = False
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    allowed_origins: list[str] = field(default_factory=list)
    max_send_buffer: int = 4 << 20
    slow_client: Literal["close", "wait"] = "close"
    send_timeout: float = 10.0
    max_queue: int = 32
    shutdown_timeout: float = 10.0
    max_body_size: int = 16 << 20
    max_header_size: int = 64 << 10
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    keepalive_timeout: float = 5.0
    loop_lag_warning: float = 0.25
    backplane: str | None = None
    metrics_path: str | None = None
    health_path: str | None = None
    shutdown_delay: float = 0.0

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
        DeflateOptions.from_setting(self.permessage_deflate)  # ValueError naming a bad option
        if self.slow_client not in ("close", "wait"):
            raise ValueError(f'slow_client must be "close" or "wait", got {self.slow_client!r}')
        if not float(self.send_timeout) > 0:
            raise ValueError(f"send_timeout must be > 0 seconds, got {self.send_timeout!r}")
        # Typed list[str], but App(allowed_origins="https://example.com") passes one str.
        origins: Any = self.allowed_origins
        if isinstance(origins, str):
            origins = [origins]
        self.allowed_origins = list(origins)
        for name in ("metrics_path", "health_path"):
            path = getattr(self, name)
            if path is not None and not (isinstance(path, str) and path.startswith("/")):
                raise ValueError(f'{name} must be a path starting with "/" (or None), got {path!r}')
        if self.metrics_path is not None and importlib.util.find_spec("prometheus_client") is None:
            raise MissingExtra("metrics_path", "prometheus_client", "metrics")
        if float(self.shutdown_delay) < 0:
            raise ValueError(f"shutdown_delay must be >= 0 seconds, got {self.shutdown_delay!r}")
