"""Path patterns, routes and routers, shared by HTTP and WebSocket endpoints.

Every pattern syntax users bring from other frameworks compiles to one regex:
`{id}`, `{id:int}` (Starlette/Robyn), `<id>`, `<int:id>` (Flask/Microdot/Panther),
`:id` (Robyn/Express). Converters are `str` (one segment, the default), `int`, `float`,
`path` (the rest, slashes included) and `uuid`. A leading slash is added when missing and
a trailing slash is optional on every route.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from .params import Resolver
from .patterns import PARAMETER, parameters

if TYPE_CHECKING:
    from .styles import Session
    from .styles.classes import GenericWebsocket
    from .styles.function import FunctionEndpoint
    from .styles.generator import GeneratorEndpoint

__all__ = ["Route", "Router", "WebSocketDecorator", "compile_path", "normalize_path", "HTTP_METHODS"]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "int": (r"-?[0-9]+", int),
    "float": (r"-?[0-9]+(?:\.[0-9]+)?", float),
    "path": (r".*", str),
    "uuid": (r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}", uuid.UUID),
}


def normalize_path(path: str) -> str:
    """Add the leading slash and drop the trailing one ("ws/book/" -> "/ws/book")."""
    return "/" + path.strip("/") if path.strip("/") else "/"


def compile_path(path: str) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    """Compile a route pattern into a regex and the converter of each parameter."""
    path = normalize_path(path)
    converters: dict[str, Callable[[str], Any]] = {}
    regex = "^"
    last = 0
    for match, (name, kind) in zip(PARAMETER.finditer(path), parameters(path), strict=True):
        if kind not in _CONVERTERS:
            raise ValueError(f"route {path!r}: unknown converter {kind!r} (use one of {', '.join(_CONVERTERS)})")
        if name in converters:
            raise ValueError(f"route {path!r}: parameter {name!r} appears twice")
        pattern, converters[name] = _CONVERTERS[kind]
        regex += re.escape(path[last:match.start()]) + f"(?P<{name}>{pattern})"
        last = match.end()
    regex += re.escape(path[last:])
    regex = regex.rstrip("/") + "/?$" if path != "/" else "^/$"
    return re.compile(regex), converters


@dataclass
class Route:
    """One endpoint: `kind` is "http" (with `methods`) or "websocket"."""

    path: str
    endpoint: Any
    kind: Literal["http", "websocket"] = "http"
    methods: frozenset[str] = frozenset()
    name: str | None = None
    resolver: Resolver | None = field(default=None, repr=False)
    regex: re.Pattern[str] = field(init=False, repr=False)
    converters: dict[str, Callable[[str], Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check = getattr(self.endpoint, "check_route", None) if self.kind == "websocket" else None
        if check is not None:  # a session that takes the route's parameters its own way (Shallot's)
            check(self.path)
        self.path = normalize_path(self.path)
        self.regex, self.converters = compile_path(self.path)

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters when `path` fits this route, else None."""
        found = self.regex.match(path)
        if found is None:
            return None
        params = {}
        for name, raw in found.groupdict().items():
            try:
                params[name] = self.converters[name](raw)
            except ValueError:
                return None
        return params


# What the decorators give back keeps its type: an HTTP endpoint as it is (`Callable[P, R]`
# in, the same out), a `GenericWebsocket` subclass as it is, a session as it is.
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
_Class = TypeVar("_Class", bound="GenericWebsocket")
_Session = TypeVar("_Session", bound="Session")


class WebSocketDecorator(Protocol):
    """What `@router.websocket(path)` applies to a handler, by its style: a `GenericWebsocket`
    subclass comes back unchanged; a session (`@websocket`, `@with_websocket`, an event-style
    `WebSocket`) as it is; an async generator function as its `GeneratorEndpoint`; any other
    function as its `FunctionEndpoint` (whose `.on_connect` / `.on_close` decorate callbacks)."""

    @overload
    def __call__(self, handler: type[_Class], /) -> type[_Class]: ...
    @overload
    def __call__(self, handler: _Session, /) -> _Session: ...
    @overload
    def __call__(self, handler: Callable[..., AsyncIterator[Any]], /) -> GeneratorEndpoint: ...
    @overload
    def __call__(self, handler: Callable[..., Any], /) -> FunctionEndpoint: ...


class Router:
    """A collection of routes, optionally under a prefix; include it in an App (or another Router)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = normalize_path(prefix) if prefix else ""
        self.routes: list[Route] = []

    def _full(self, path: str) -> str:
        return normalize_path(self.prefix + "/" + path.lstrip("/")) if self.prefix else normalize_path(path)

    def add_route(self, path: str, endpoint: Any, methods: Iterable[str] = ("GET",), name: str | None = None) -> Route:
        """Register an HTTP endpoint (its return value becomes the response).

        A WebSocket session (e.g. a function wrapped by `with_websocket`) registered this
        way becomes a WebSocket route, as Microdot's `@app.route` + `@with_websocket` do.
        """
        if getattr(endpoint, "is_tether_session", False):
            return self.add_websocket_route(path, endpoint, name)
        methods = {m.upper() for m in methods}
        unknown = methods - set(HTTP_METHODS)
        if unknown:
            raise ValueError(f"route {path!r}: unknown HTTP method(s) {sorted(unknown)}")
        if "GET" in methods:
            methods.add("HEAD")
        full = self._full(path)
        route = Route(full, endpoint, "http", frozenset(methods), name, Resolver(endpoint, full, context=("request",)))
        self.routes.append(route)
        return route

    def add_websocket_route(self, path: str, session: Session, name: str | None = None) -> Route:
        """Register a WebSocket session: an async callable taking the core `WebSocket`."""
        route = Route(self._full(path), session, "websocket", frozenset(), name)
        self.routes.append(route)
        return route

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[_Endpoint], _Endpoint]:
        """Decorator registering an HTTP endpoint for `methods`; it returns the function as it is."""
        def decorator(func: _Endpoint) -> _Endpoint:
            self.add_route(path, func, methods)
            return func
        return decorator

    def get(self, path: str) -> Callable[[_Endpoint], _Endpoint]:
        return self.route(path, ["GET"])

    def post(self, path: str) -> Callable[[_Endpoint], _Endpoint]:
        return self.route(path, ["POST"])

    def put(self, path: str) -> Callable[[_Endpoint], _Endpoint]:
        return self.route(path, ["PUT"])

    def patch(self, path: str) -> Callable[[_Endpoint], _Endpoint]:
        return self.route(path, ["PATCH"])

    def delete(self, path: str) -> Callable[[_Endpoint], _Endpoint]:
        return self.route(path, ["DELETE"])

    def websocket(self, path: str, subprotocols: Iterable[str] | None = None) -> WebSocketDecorator:
        """Decorator registering a WebSocket handler written in any style.

        A function becomes a function-style endpoint (returned, so that its `.on_connect`
        and `.on_close` decorators work); a `GenericWebsocket` subclass is registered and
        returned unchanged; `@websocket` generators and `@with_websocket` functions as they are.
        """
        from .styles import adapt  # styles build on the core; imported when first used

        def decorator(handler: Any) -> Any:
            session = adapt(handler, self._full(path), subprotocols or ())
            self.add_websocket_route(path, session)
            return handler if isinstance(handler, type) else session
        return decorator

    def include_router(self, router: Router, prefix: str = "") -> None:
        """Copy `router`'s routes into this one, under `prefix` (added to the router's own)."""
        for route in router.routes:
            path = self._full(normalize_path(prefix + "/" + route.path.lstrip("/")) if prefix else route.path)
            copy = Route(path, route.endpoint, route.kind, route.methods, route.name, route.resolver)
            self.routes.append(copy)

    def match_websocket(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        for route in self.routes:
            if route.kind == "websocket":
                params = route.match(path)
                if params is not None:
                    return route, params
        return None

    def match_http(self, method: str, path: str) -> tuple[Route | None, dict[str, Any], set[str], bool]:
        """Find the HTTP route for (method, path).

        Returns (route, params, allowed_methods, websocket_only): when `route` is None,
        `allowed_methods` non-empty means 405 and `websocket_only` means 426.
        """
        allowed: set[str] = set()
        websocket_only = False
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.kind == "websocket":
                websocket_only = True
            elif method in route.methods:
                return route, params, allowed, False
            else:
                allowed |= route.methods
        return None, {}, allowed, websocket_only and not allowed
