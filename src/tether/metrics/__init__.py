"""Operations, both opt-in: Prometheus metrics and a readiness check (docs/operations.md).

- `health_path` (a setting, e.g. "/healthz") serves `app.ready`: 200 "ready" from the end
  of startup, 503 "not ready" once shutdown began (the native server turns it off first
  thing on SIGINT/SIGTERM, before `shutdown_delay`) or while the app set `app.ready = False`.
- `metrics_path` (e.g. "/metrics") serves Prometheus metrics, rendered by
  `tether.metrics.prometheus` (which needs `pip install tether[metrics]`). `app.metrics` is
  then a `Metrics`, else None.

Both are ordinary GET routes added by `install` when the App starts, so `before_request`
hooks apply to them (an app can guard its metrics with one).

What happens once per connection (a handshake accepted or refused, a close) is counted in
plain ints by the hooks below, which the core and the native server call and which do
nothing when metrics are off. What happens per message is never counted for metrics: the
traffic totals and the send buffers are read at scrape time from what the server keeps
anyway (`watch_server`), so the per-message path runs no metrics code at all.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..channel import CloseKind
from ..http import PlainTextResponse, Request, Response

__all__ = ["Metrics", "ServerView", "install", "count_handshake", "count_close", "watch_server",
           "mark_not_ready"]



class ServerView(Protocol):
    """What the metrics read of a native server (`tether.server.serve.ServerState`) at scrape
    time: its open connections (channels carry `messages_in`, `bytes_in`, `messages_out`,
    `bytes_out`) and the totals of the connections that ended (`traffic`)."""

    connections: set[Any]
    traffic: Any


class Metrics:
    """What tether counts for an App whose `metrics_path` is set (`app.metrics`).

    `handshakes` maps an HTTP status (101: accepted) to a count, `closes` maps (close code,
    who closed: "server" or "client") to a count, `slow_client_closes` counts the 1008
    closes of clients that did not read. `servers` and `watchdogs` are the native servers
    and loop watchdogs serving the App, read at scrape time.
    """

    def __init__(self) -> None:
        self.handshakes: dict[int, int] = {}
        self.closes: dict[tuple[int, str], int] = {}
        self.slow_client_closes = 0
        self.servers: list[ServerView] = []
        self.watchdogs: list[Any] = []

    def handshake(self, status: int) -> None:
        """A handshake ended with HTTP `status`: 101 (accepted) or a refusal."""
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    def closed(self, code: int, by: str, kind: CloseKind = CloseKind.OTHER) -> None:
        """An accepted connection closed with `code`; `by` is "server" or "client"; `kind`
        says why a road failed it (`CloseKind.SLOW_CLIENT`: it did not read)."""
        key = (code, by)
        self.closes[key] = self.closes.get(key, 0) + 1
        if kind is CloseKind.SLOW_CLIENT:
            self.slow_client_closes += 1


# -- hooks: the core and the native server call these; they do nothing when metrics are off ----
def count_handshake(app: Any, status: int) -> None:
    """Count a handshake that ended with HTTP `status` for `app` (if it has metrics on)."""
    metrics = getattr(app, "metrics", None)
    if metrics is not None:
        metrics.handshake(status)


def count_close(app: Any, code: int, by: str | None, kind: CloseKind = CloseKind.OTHER) -> None:
    """Count the close of an accepted connection of `app` (if it has metrics on)."""
    metrics = getattr(app, "metrics", None)
    if metrics is not None:
        metrics.closed(code, by or "client", kind)


def watch_server(app: Any, server: ServerView, watchdog: Any = None) -> None:
    """A native server (and its loop watchdog, if one runs) serves `app`: read them at scrape
    time. Kept after the server stops, so the totals never go down."""
    metrics = getattr(app, "metrics", None)
    if metrics is not None:
        metrics.servers.append(server)
        if watchdog is not None:
            metrics.watchdogs.append(watchdog)


def mark_not_ready(app: Any) -> None:
    """Shutdown began: the readiness check answers 503 from now on."""
    app.ready = False


# -- the endpoints -------------------------------------------------------------------------
def install(app: Any) -> None:
    """Add the endpoints the settings ask for (`App.startup()` calls this; calling it again
    adds nothing). A path another route already serves is an error, not a silent shadow."""
    settings = app.settings
    if settings.metrics_path is not None and app.metrics is None:
        from .prometheus import endpoint

        app.metrics = Metrics()
        _add(app, settings.metrics_path, endpoint(app, app.metrics), "metrics_path")
    if settings.health_path is not None:
        _add(app, settings.health_path, _health_endpoint(app), "health_path")


def _add(app: Any, path: str, handler: Any, setting: str) -> None:
    route = app.match_http("GET", path)[0]
    if route is not None:
        if getattr(route.endpoint, "tether_operations", None) == setting:
            return  # added by an earlier startup of this App
        raise ValueError(f"{setting} {path!r} is already served by {route.endpoint!r}; choose another path")
    handler.tether_operations = setting
    app.add_route(path, handler, ["GET"])


def _health_endpoint(app: Any) -> Any:
    async def health(request: Request) -> Response:
        """200 while the app serves, 503 once it is shutting down (or set not ready)."""
        if app.ready:
            return PlainTextResponse("ready\n", 200, {"Cache-Control": "no-store"})
        return PlainTextResponse("not ready\n", 503, {"Cache-Control": "no-store"})
    return health
