"""The App: routes, hooks, settings, the hub, and the two entry points every road in calls.

- `await app.handle_http(request) -> Response` answers one HTTP request.
- `await app.serve_websocket(channel, ...)` runs one WebSocket connection from handshake to
  close: route (404), Origin policy (403), then the route's session, whose outcome the App
  turns into the close code: return -> 1000, WebSocketDisconnect -> quiet, exception ->
  the exception handler registered for its class, else logged and 1011; a session that never
  accepted -> 403, a ParamError before accept -> 400.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .asgi import serve_asgi
from .backplane import configured_url as backplane_url
from .backplane import from_url as backplane_from_url
from .channel import Channel
from .config import Settings
from .datastructures import Headers, State
from .exceptions import HTTPException, ParamError, WebSocketDisconnect
from .http import PlainTextResponse, Request, Response, to_response
from .hub import Hub
from .metrics import Metrics
from .metrics import install as install_operations
from .mount import call_mounted_http
from .params import call_maybe_async, call_offloaded
from .protocol import origin_allowed
from .protocol.codes import WS_1000_NORMAL_CLOSURE, WS_1011_INTERNAL_ERROR
from .routing import Router, normalize_path
from .staticfiles import directory_endpoint
from .styles.classes import register_urls
from .styles.events import dependencies_of
from .types import ASGIApp, Receive, Scope, Send
from .websocket_connection import WebSocket

if TYPE_CHECKING:
    from .live import Live

__all__ = ["App"]

logger = logging.getLogger("tether")
access_log = logging.getLogger("tether.access")


# The decorators return the function they are given, with its own type (overloads,
# ParamSpec and all), so a type checker still sees the user's function after `@app.on_startup`.
_Hook = TypeVar("_Hook", bound=Callable[[], Any])
_RequestHook = TypeVar("_RequestHook", bound=Callable[[Request], Any])
_ResponseHook = TypeVar("_ResponseHook", bound=Callable[[Response], Any])
_ErrorHandler = TypeVar("_ErrorHandler", bound=Callable[[Request, Any], Any])


def _hook_decorator(target: list[tuple[str | None, Callable[..., Any]]], func: Callable[..., Any] | str | None,
                    path: str | None) -> Callable[..., Any]:
    """Support `@app.hook`, `@app.hook()` and `@app.hook("/path")`."""
    if callable(func):
        target.append((None, func))
        return func
    path = func if isinstance(func, str) else path

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        target.append((path, f))
        return f
    return decorator


class App(Router):
    """A tether application.

    `App(__file__)` (the argument is optional) takes the settings of `Settings` as keywords,
    e.g. `App(max_message_size=65536, allowed_origins=["https://example.com"])`.
    `urls={"path": HandlerOrClass, ...}` registers WebSocket handlers as Panther does, and
    `exception_handlers={ExcClass: handler, ...}` registers exception handlers as Starlette
    does (the same as `@app.exception_handler(ExcClass)` on each).
    """

    def __init__(self, file: str | None = None, *, urls: dict[str, Any] | None = None,
                 exception_handlers: dict[type[BaseException], Callable[..., Any]] | None = None,
                 **settings: Any) -> None:
        super().__init__()
        unknown = set(settings) - set(Settings.names())
        if unknown:
            raise TypeError(f"App() got unknown setting(s) {', '.join(sorted(unknown))}; "
                            f"the settings are: {', '.join(Settings.names())}")
        self.settings = Settings(**settings)
        self.root = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
        self.hub = Hub()
        self.state = State()
        self._before: list[tuple[str | None, Callable[..., Any]]] = []
        self._after: list[tuple[str | None, Callable[..., Any]]] = []
        self._exception_handlers: dict[type[BaseException], Callable[..., Any]] = dict(exception_handlers or {})
        self._startup: list[Callable[[], Any]] = []
        self._shutdown: list[Callable[[], Any]] = []
        self._mounts: list[tuple[str, ASGIApp]] = []
        self._error_listeners: list[Callable[[BaseException], Any]] = []
        #: What the `metrics_path` endpoint counts (a `tether.metrics.Metrics`), once started; else None.
        self.metrics: Metrics | None = None
        #: What the `health_path` check reports: True from the end of startup until shutdown
        #: begins. An app may set it to False (say, while its database is unreachable).
        self.ready = False
        register_urls(self, urls or {})

    # -- the events style's dependency injection (kept by tether.styles.events) --------------
    def inject_global(self, **values: Any) -> None:
        """Values every event-style handler gets as `global_dependencies`."""
        dependencies_of(self).inject_global(**values)

    def inject(self, **values: Any) -> None:
        """Values every event-style handler gets as `router_dependencies`."""
        dependencies_of(self).inject(**values)

    @property
    def global_dependencies(self) -> dict[str, Any]:
        """What `inject_global(...)` filled."""
        return dependencies_of(self).global_dependencies

    @property
    def router_dependencies(self) -> dict[str, Any]:
        """What `inject(...)` filled."""
        return dependencies_of(self).router_dependencies

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The App is an ASGI 3 application (http, websocket, lifespan): run it under any
        ASGI server, wrap it in ASGI middleware, or mount it in another ASGI app."""
        await serve_asgi(self, scope, receive, send)

    def mount(self, prefix: str, asgi_app: ASGIApp) -> None:
        """Serve `asgi_app` (any ASGI application) under `prefix`; it sees the rest of the
        path, with `prefix` added to `root_path`."""
        self._mounts.append((normalize_path(prefix), asgi_app))

    @property
    def mounts(self) -> list[tuple[str, ASGIApp]]:
        """(prefix, app) of every mounted ASGI app, in the order they were mounted."""
        return list(self._mounts)

    def mounted(self, path: str) -> tuple[str, ASGIApp] | None:
        """(prefix, app) of the mounted ASGI app that serves `path`, if any."""
        for prefix, asgi_app in self._mounts:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return prefix, asgi_app
        return None

    # -- running ----------------------------------------------------------------------------
    def start(self, host: str | None = None, port: int | None = None, **options: Any) -> None:
        """Serve this app on tether's native server until SIGINT/SIGTERM (alias: `run`).

        `host`/`port` default to the environment's TETHER_HOST/TETHER_PORT, else
        127.0.0.1:8080. `options` are those of `tether.server.run` (workers, ssl_certfile,
        ssl_keyfile, log_level).
        """
        from .server.serve import run  # the one place the core reaches for a road in

        host = host or os.environ.get("TETHER_HOST", "127.0.0.1")
        port = port or int(os.environ.get("TETHER_PORT", "8080"))
        run(self, host=host, port=port, **options)

    run = start

    async def startup(self) -> None:
        """Bind the hub to the running loop, connect its backplane (the `backplane` setting,
        else `TETHER_BACKPLANE`; MissingExtra, before any connection, if its package is not
        installed), add the metrics and health endpoints the settings ask for, then
        run the startup hooks (every road calls this before serving: the native server, the
        ASGI lifespan, the TestClient); `ready` is then True."""
        self.hub.bind(asyncio.get_running_loop())
        await self.hub.start(backplane_from_url(backplane_url(self.settings.backplane), self.hub.node))
        if self.settings.metrics_path is not None or self.settings.health_path is not None:
            install_operations(self)  # the endpoints (docs/operations.md)
        for hook in self._startup:
            await call_maybe_async(hook)
        self.ready = True

    async def shutdown(self) -> None:
        """Run the shutdown hooks (after the last connection is served), then leave the cluster."""
        self.ready = False
        try:
            for hook in self._shutdown:
                await call_maybe_async(hook)
        finally:
            await self.hub.stop()

    # -- hooks --------------------------------------------------------------------------------
    def on_startup(self, func: _Hook) -> _Hook:
        """Decorator: run `func()` (sync or async) at startup, before serving."""
        self._startup.append(func)
        return func

    def on_shutdown(self, func: _Hook) -> _Hook:
        """Decorator: run `func()` (sync or async) at shutdown, after serving."""
        self._shutdown.append(func)
        return func

    def on_event(self, kind: str) -> Callable[[_Hook], _Hook]:
        """`@app.on_event("startup" | "shutdown")`."""
        if kind not in ("startup", "shutdown"):
            raise ValueError(f"on_event() takes 'startup' or 'shutdown', not {kind!r}")
        return self.on_startup if kind == "startup" else self.on_shutdown

    @overload
    def before_request(self, func: _RequestHook, /) -> _RequestHook: ...
    @overload
    def before_request(self, func: str | None = None,
                       path: str | None = None) -> Callable[[_RequestHook], _RequestHook]: ...

    def before_request(self, func: Callable[..., Any] | str | None = None,
                       path: str | None = None) -> Callable[..., Any]:
        """Hook run before each HTTP request (optionally only for `path`): it gets the request
        and may return a Response to answer at once."""
        return _hook_decorator(self._before, func, path)

    @overload
    def after_request(self, func: _ResponseHook, /) -> _ResponseHook: ...
    @overload
    def after_request(self, func: str | None = None,
                      path: str | None = None) -> Callable[[_ResponseHook], _ResponseHook]: ...

    def after_request(self, func: Callable[..., Any] | str | None = None,
                      path: str | None = None) -> Callable[..., Any]:
        """Hook run after each HTTP request: it gets the response and may return a new one."""
        return _hook_decorator(self._after, func, path)

    def exception_handler(self, exc_class: type[BaseException]) -> Callable[[_ErrorHandler], _ErrorHandler]:
        """Decorator: `handler(request, exc)` turns `exc_class` (and subclasses) into a response.

        A WebSocket handler's exception goes to it too, as in Starlette: `handler(websocket,
        exc)` may close the connection with a code of its choice, or refuse a handshake not
        accepted yet; what it leaves open is closed with 1011 (refused with 500 before accept).
        Its return value is not sent. A handler registered for `Exception` itself (a catch-all
        for HTTP 500s) is not given WebSocket errors, as Starlette does not: they are logged.
        A sync handler runs in the thread pool, as for HTTP."""
        def decorator(func: _ErrorHandler) -> _ErrorHandler:
            self._exception_handlers[exc_class] = func
            return func
        return decorator

    def _exception_handler_for(self, exc: BaseException, *, catch_all: bool = True
                               ) -> tuple[type[BaseException], Callable[..., Any]] | None:
        """(the class it was registered for, the handler) of the nearest class of `exc` that has
        one; with `catch_all=False`, not one registered for `Exception` or `BaseException`."""
        for exc_class in type(exc).__mro__:
            if not catch_all and exc_class in (Exception, BaseException):
                break
            handler = self._exception_handlers.get(exc_class)
            if handler is not None:
                return exc_class, handler
        return None

    def live(self, path: str, **settings: Any) -> Live:
        """Mount a live endpoint at `path` (`tether.live`: rooms with history, presence and
        auth over the protocol of docs/live-protocol.md) and serve the browser client at
        `/tether.js`. `settings` are the limits of `tether.live.LiveSettings` (the protocol
        doc's table). Returns the endpoint, whose `authenticate`, `room` and `on_publish`
        declare the app's rooms and hooks."""
        from .live import Live, LiveSettings  # the live layer builds on the core: loaded when used

        return Live(self, path, LiveSettings(**settings))

    def static(self, prefix: str, directory: str) -> None:
        """Serve the files under `directory` (relative to the app's root) at `prefix/...`; a
        directory serves its index.html."""
        root = os.path.join(self.root, directory)
        try:
            endpoint = directory_endpoint(root)
        except ValueError as exc:
            raise ValueError(f"static({prefix!r}): {exc}") from None
        self.add_route(prefix.rstrip("/") + "/{path:path}", endpoint, ["GET"])

    # -- HTTP -------------------------------------------------------------------------------
    async def handle_http(self, request: Request) -> Response:
        """Answer one request: hooks, routing (404/405/426), typed params (400), the handler."""
        try:
            response = await self._dispatch_http(request)
        except Exception as exc:
            response = await self._error_response(request, exc)
        for path, hook in self._after:
            if path is None or path == request.path:
                try:
                    result = await call_offloaded(hook, response)
                except Exception as exc:
                    return await self._error_response(request, exc)
                if isinstance(result, Response):
                    response = result
        return response

    async def _dispatch_http(self, request: Request) -> Response:
        mounted = self.mounted(request.path)
        if mounted is not None:
            return await call_mounted_http(mounted[1], mounted[0], request)
        for path, hook in self._before:
            if path is None or path == request.path:
                result = await call_offloaded(hook, request)
                if isinstance(result, Response):
                    return result
                if isinstance(result, Request):
                    request = result
        route, params, allowed, websocket_only = self.match_http(request.method, request.path)
        if route is None:
            if websocket_only:
                raise HTTPException(426, "this route only speaks WebSocket; send an Upgrade request",
                                    [("Upgrade", "websocket"), ("Connection", "Upgrade")])
            if allowed:
                raise HTTPException(405, None, [("Allow", ", ".join(sorted(allowed)))])
            raise HTTPException(404)
        request.path_params = params
        assert route.resolver is not None
        try:
            kwargs = route.resolver.resolve(params, request.query_params, {"request": request})
        except ParamError as exc:
            raise HTTPException(400, str(exc)) from None
        # A sync `def` handler (or hook) runs in the thread pool, an `async def` on the loop.
        return to_response(await route.resolver.call_offloaded(**kwargs))

    async def _error_response(self, request: Request, exc: Exception) -> Response:
        found = self._exception_handler_for(exc)
        if found is not None:
            exc_class, handler = found
            try:
                return to_response(await call_offloaded(handler, request, exc))
            except Exception:
                logger.exception("exception handler for %s raised", exc_class.__name__)
        if isinstance(exc, HTTPException):
            return PlainTextResponse(exc.detail, exc.status_code, exc.headers)
        logger.exception("%s %s raised", request.method, request.path, exc_info=exc)
        self._report(exc)
        return PlainTextResponse("Internal Server Error", 500)

    # -- WebSocket ----------------------------------------------------------------------------
    async def serve_websocket(self, channel: Channel, *, path: str, query_string: str = "",
                              headers: Headers, client: tuple[str, int] | None = None,
                              subprotocols: Iterable[str] = (), scheme: str = "ws") -> WebSocket:
        """Run one connection from handshake to close (see the module doc); returns it.

        Each handshake is logged on `tether.access`: 101 at INFO, a refusal at WARNING with its
        status and reason (a browser only ever shows 1006), and at the end the close code, who
        closed and how long the connection lived."""
        ws = WebSocket(channel, self.hub, path=path, query_string=query_string, headers=headers,
                       client=client, subprotocols=subprotocols, max_queue=self.settings.max_queue,
                       scheme=scheme, app=self)
        await self._run_session(ws)
        if ws.opened_at is not None:
            access_log.info("%s closed %s by the %s after %.3f s", ws.log_name, ws.close_code,
                            ws.closed_by or "client", time.monotonic() - ws.opened_at)
        return ws

    async def _run_session(self, ws: WebSocket) -> None:
        found = self.match_websocket(ws.path)
        if found is None:
            await ws.reject(404, f"no WebSocket route for {ws.path}")
            return
        route, ws.path_params = found
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers.get("host"), self.settings.allowed_origins):
            await ws.reject(403, f"origin {origin} is not allowed (see the allowed_origins setting)")
            return
        try:
            await route.endpoint(ws)
        except WebSocketDisconnect:
            pass
        except ParamError as exc:
            if not ws.accepted:
                await ws.reject(400, str(exc))
                return
            logger.error("WebSocket %s: %s", ws.path, exc)
            self._report(exc)
            await ws.close(WS_1011_INTERNAL_ERROR)
        except Exception as exc:
            if not await self._websocket_error_handled(ws, exc):
                logger.exception("WebSocket handler for %s raised", ws.path)
                self._report(exc)
            if not ws.accepted:
                await ws.reject(500, "Internal Server Error")
            else:
                await ws.close(WS_1011_INTERNAL_ERROR)
            return
        if not ws.accepted:
            await ws.reject(403, "the handler did not accept the connection")
        else:
            await ws.close(WS_1000_NORMAL_CLOSURE)

    async def _websocket_error_handled(self, ws: WebSocket, exc: Exception) -> bool:
        """Give `exc` to the exception handler registered for its class, if any; True when
        one ran without raising (it may have closed or refused the connection)."""
        found = self._exception_handler_for(exc, catch_all=False)
        if found is None:
            return False
        exc_class, handler = found
        try:
            await call_offloaded(handler, ws, exc)
        except WebSocketDisconnect:
            pass  # it sent to a client that had gone: handled all the same
        except Exception:
            logger.exception("exception handler for %s raised", exc_class.__name__)
            return False
        return True

    # -- errors the App answered for a handler --------------------------------------------------
    def add_error_listener(self, listener: Callable[[BaseException], Any]) -> None:
        """Call `listener(exc)` with every exception a handler raised that the App turned into
        a 500 or a close 1011 (the TestClient uses it to re-raise them in the test)."""
        self._error_listeners.append(listener)

    def remove_error_listener(self, listener: Callable[[BaseException], Any]) -> None:
        """Stop calling `listener` (see `add_error_listener`)."""
        self._error_listeners.remove(listener)

    def _report(self, exc: BaseException) -> None:
        for listener in list(self._error_listeners):
            listener(exc)
