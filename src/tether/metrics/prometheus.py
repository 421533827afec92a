"""The Prometheus side of `tether.metrics`: a collector that reads an App at scrape time.

Every value is computed when Prometheus scrapes (on the event loop: the endpoint is an
`async def`, so nothing it reads changes under it): the open connections come from the hub,
the traffic totals from the native servers' counters, the send buffers from the open
channels, the loop lag from the watchdog, the backplane's state from the backplane. A scrape
costs O(open connections); nothing is counted per message.

The endpoint serves tether's metrics and whatever is registered in prometheus_client's
default registry (its process_* and python_* metrics, and the app's own), in the text
format or OpenMetrics, as the scraper's Accept header asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ..backplane.base import BackplaneState
from ..http import Request, Response
from . import Metrics

__all__ = ["TetherCollector", "endpoint"]

_ROUTE_CACHE = 10_000  # concrete paths remembered with their route pattern


class TetherCollector:
    """The `tether_*` metrics of one App (a prometheus_client custom collector)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._routes: dict[str, str] = {}  # concrete path -> the route pattern it matched

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._events()
        yield from self._traffic()
        yield from self._loop()
        yield from self._backplane()
        ready = GaugeMetricFamily("tether_ready", "1 while the app is ready to serve (what the readiness "
                                  "check answers), 0 once shutdown began")
        ready.add_metric([], 1 if self.app.ready else 0)
        yield ready

    # -- connections -----------------------------------------------------------------------
    def _route(self, path: str) -> str:
        """The route pattern (`/chat/{room}`) a concrete path matched: a label of bounded
        cardinality, where the concrete paths are not."""
        pattern = self._routes.get(path)
        if pattern is None:
            found = self.app.match_websocket(path)
            pattern = found[0].path if found is not None else path
            if len(self._routes) >= _ROUTE_CACHE:
                self._routes.clear()
            self._routes[path] = pattern
        return pattern

    def _connections(self) -> Iterator[Metric]:
        hub = self.app.hub
        per_route: dict[str, int] = {}
        largest = total = 0
        for connection_id in hub.ids():
            ws = hub.get(connection_id)
            if ws is None:
                continue
            route = self._route(ws.path)
            per_route[route] = per_route.get(route, 0) + 1
            buffered = ws.channel.buffered_bytes()
            total += buffered
            largest = max(largest, buffered)
        open_ = GaugeMetricFamily("tether_websocket_connections",
                                  "Open WebSocket connections (accepted, not yet closed), by route pattern",
                                  labels=["path"])
        for route, count in sorted(per_route.items()):
            open_.add_metric([route], count)
        yield open_
        yield GaugeMetricFamily("tether_websocket_send_buffer_max_bytes",
                                "The largest send buffer of any open connection, sampled at scrape time "
                                "(bytes queued for a client and not yet taken by it)", value=largest)
        yield GaugeMetricFamily("tether_websocket_send_buffer_bytes",
                                "Bytes queued for clients over all open connections, at scrape time",
                                value=total)

    def _events(self) -> Iterator[Metric]:
        metrics = self.metrics
        handshakes = CounterMetricFamily("tether_websocket_handshakes",
                                         "WebSocket handshakes by outcome and HTTP status (101: accepted)",
                                         labels=["outcome", "status"])
        for status, count in sorted(metrics.handshakes.items()):
            handshakes.add_metric(["accepted" if status == 101 else "refused", str(status)], count)
        yield handshakes
        closes = CounterMetricFamily("tether_websocket_closes",
                                     "Closed WebSocket connections by close code and by who closed (server: "
                                     "the app; client: the peer closed, vanished or broke a rule)",
                                     labels=["code", "by"])
        for (code, by), count in sorted(metrics.closes.items()):
            closes.add_metric([str(code), by], count)
        yield closes
        yield CounterMetricFamily("tether_websocket_slow_client_closes",
                                  "Connections closed with 1008 because the client did not read (its send "
                                  "buffer went past max_send_buffer)", value=metrics.slow_client_closes)

    def _traffic(self) -> Iterator[Metric]:
        if not self.metrics.servers:
            return  # not the native server: the ASGI server does the framing, and counts nothing for us
        messages_in = bytes_in = messages_out = bytes_out = 0
        for server in self.metrics.servers:
            for counters in (server.traffic, *server.connections):
                if hasattr(counters, "bytes_in"):  # a WebSocket channel (not an HTTP connection)
                    messages_in += counters.messages_in
                    bytes_in += counters.bytes_in
                    messages_out += counters.messages_out
                    bytes_out += counters.bytes_out
        for name, what, value in (
                ("messages_received", "WebSocket messages and control frames received (native server)", messages_in),
                ("received_bytes", "WebSocket bytes received, frame headers included (native server)", bytes_in),
                ("messages_sent", "WebSocket messages and control frames sent (native server)", messages_out),
                ("sent_bytes", "WebSocket bytes sent, frame headers included (native server)", bytes_out)):
            yield CounterMetricFamily(f"tether_websocket_{name}", what, value=value)

    def _loop(self) -> Iterator[Metric]:
        watchdogs = self.metrics.watchdogs
        if not watchdogs:
            return  # the loop_lag_warning setting is 0, or not the native server
        yield GaugeMetricFamily("tether_event_loop_lag_seconds",
                                "How late the event loop ran the watchdog's last tick (every 0.1 s)",
                                value=max(w.lag for w in watchdogs))
        yield GaugeMetricFamily("tether_event_loop_lag_max_seconds",
                                "The largest event-loop lag seen since the server started",
                                value=max(w.max_lag for w in watchdogs))
        yield CounterMetricFamily("tether_event_loop_stalls",
                                  "Event-loop stalls longer than loop_lag_warning (each logged a WARNING)",
                                  value=sum(w.stalls for w in watchdogs))

    def _backplane(self) -> Iterator[Metric]:
        backplane = self.app.hub.backplane
        state = GaugeMetricFamily("tether_backplane_state",
                                  "1 for the state the backplane is in (local: one process, no backplane)",
                                  labels=["state"])
        for each in BackplaneState:
            state.add_metric([each.value], 1 if backplane.state == each else 0)
        yield state
        yield CounterMetricFamily("tether_backplane_lost_messages",
                                  "Cluster messages that could not reach other nodes (backplane down)",
                                  value=backplane.lost)
        yield CounterMetricFamily("tether_backplane_outages",
                                  "Times the backplane went down since start", value=backplane.outages)


class _DefaultRegistry:
    """prometheus_client's default registry, as one collector of ours."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def endpoint(app: Any, metrics: Metrics) -> Callable[[Request], Any]:
    """The metrics route's handler for `app`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TetherCollector(app, metrics))
    registry.register(_DefaultRegistry())

    async def prometheus_metrics(request: Request) -> Response:
        """Every metric, in the format the Accept header asks for."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), 200, {"Content-Type": content_type, "Cache-Control": "no-store"})
    return prometheus_metrics
