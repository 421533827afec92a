"""Typed parameter resolution, shared by HTTP endpoints and every WebSocket style.

A `Resolver` reads a handler's signature once, at registration. Per call it fills each
parameter by name: from the context (`request`, `websocket`, ...), then the path
parameters, then the query string, coerced to the annotation (`int`, `float`, `bool`,
`str`, `Optional[X]`, `list[X]` for repeated keys, or any class built from a string such as
`UUID` or an `Enum`). A parameter with a default is optional; a missing or uncoercible
required one raises `ParamError`, which the caller turns into HTTP 400.

Where a handler runs: `call_maybe_async` calls it on the event loop (WebSocket callbacks,
startup/shutdown hooks); `call_offloaded` (HTTP handlers and hooks) runs a sync `def` in
tether's thread pool, `call_in_thread`, so a blocking one does not stall the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .exceptions import ParamError
from .patterns import parameters

__all__ = ["ParamError", "Resolver", "coerce", "call_maybe_async", "call_in_thread", "call_offloaded",
           "is_async_callable", "SYNC_THREADS"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def coerce(value: Any, annotation: Any) -> Any:
    """Convert a raw (string) value to `annotation`; raise ValueError when it does not fit."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is str:
        return value if annotation is not str else str(value)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        for option in options:
            try:
                return coerce(value, option)
            except (ValueError, TypeError):
                continue
        raise ValueError(f"expected {' or '.join(_type_name(o) for o in options)}")
    if origin is typing.Literal:
        for choice in typing.get_args(annotation):
            if str(choice) == str(value):
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, typing.get_args(annotation)))}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected a boolean (true/false, 1/0, yes/no, on/off)")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        return annotation(value)
    return value


def _is_list(annotation: Any) -> tuple[bool, Any]:
    """(True, item type) for `list[X]`/`List[X]`/`Optional[list[X]]`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return _is_list(options[0])
    if annotation is list or origin is list:
        args = typing.get_args(annotation)
        return True, args[0] if args else str
    return False, None


class Resolver:
    """Fills a callable's parameters from context, path and query (see the module doc).

    `skip` leading positional parameters are supplied by the caller (e.g. the connection as
    the first parameter of a WebSocket handler). `context` names parameters taken from the
    call's context dict rather than the request.
    """

    def __init__(self, func: Callable[..., Any], route: str = "", skip: int = 0,
                 context: tuple[str, ...] = ()) -> None:
        self.func = func
        self.route = route
        self.is_async = is_async_callable(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: use the raw annotations
            hints = {}
        params = list(inspect.signature(func).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < skip and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise TypeError(
                f"{_describe(func)} for route {route!r} must accept {skip} positional "
                f"parameter(s) (the connection), but its signature is {inspect.signature(func)}")
        self.params: list[tuple[str, Any, Any, bool, Any]] = []
        skipped = 0
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if skipped < skip and param.kind != param.KEYWORD_ONLY:
                skipped += 1
                continue
            annotation = hints.get(param.name, param.annotation)
            is_list, item = _is_list(annotation)
            self.params.append((param.name, annotation, param.default, is_list, item))
        self.context = context
        if route.startswith("/") and not any(p.kind == p.VAR_KEYWORD for p in params):
            self._check_path_parameters()

    def _check_path_parameters(self) -> None:
        """A path parameter no handler parameter receives, while a required parameter is
        not in the path, is a typo (`/typo/{rom}` with `room: str`): refuse it now, naming
        the route, instead of answering every request with "missing query parameter"."""
        in_path = [name for name, _ in parameters(self.route)]
        names = {name for name, *_ in self.params}
        unused = [name for name in in_path if name not in names]
        required = [name for name, annotation, default, *_ in self.params
                    if default is inspect.Parameter.empty and name not in in_path and name not in self.context
                    and not (self.context and _from_context_by_type(annotation))]
        if unused and required:
            raise TypeError(
                f"route {self.route!r}: path parameter {unused[0]!r} is not a parameter of "
                f"{_describe(self.func)}, which requires {required[0]!r} (from the query string): "
                f"is one a typo of the other?")

    def resolve(self, path_params: Mapping[str, Any], query: Any,
                context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The keyword arguments for one call; raise ParamError naming the first bad parameter."""
        kwargs: dict[str, Any] = {}
        for name, annotation, default, is_list, item in self.params:
            if context and name in context:
                kwargs[name] = context[name]
                continue
            if context and _from_context_by_type(annotation):
                found = next((v for v in context.values() if isinstance(v, annotation)), None)
                if found is not None:
                    kwargs[name] = found
                    continue
            if name in path_params:
                where, raw = "path", path_params[name]
            elif is_list:
                values = query.getlist(name) if query is not None else []
                if not values:
                    if default is inspect.Parameter.empty:
                        raise ParamError(name, f"missing required query parameter {name!r}")
                    kwargs[name] = default
                    continue
                try:
                    kwargs[name] = [coerce(v, item) for v in values]
                except (ValueError, TypeError) as exc:
                    raise ParamError(name, f"query parameter {name!r} must be a list of "
                                           f"{_type_name(item)}: {exc}") from None
                continue
            elif query is not None and name in query:
                where, raw = "query", query.get(name)
            elif default is not inspect.Parameter.empty:
                kwargs[name] = default
                continue
            else:
                raise ParamError(name, f"missing required query parameter {name!r}")
            try:
                kwargs[name] = coerce(raw, annotation)
            except (ValueError, TypeError):
                raise ParamError(name, f"{where} parameter {name!r} must be {_type_name(annotation)}, "
                                       f"got {raw!r}") from None
        return kwargs

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function; await the result when it is awaitable (sync and async both work)."""
        return await call_maybe_async(self.func, *args, **kwargs)

    async def call_offloaded(self, *args: Any, **kwargs: Any) -> Any:
        """`call`, but a sync function runs in the thread pool (the rule for HTTP handlers)."""
        if self.is_async:
            return await call_maybe_async(self.func, *args, **kwargs)
        return await call_in_thread(self.func, *args, **kwargs)


async def call_maybe_async(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func` on the event loop and await its result if it is awaitable."""
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


#: Threads of the pool sync HTTP handlers run in (per process; Starlette's limit too).
SYNC_THREADS = 40
_pool: list[ThreadPoolExecutor] = []  # the pool once started; a forked worker starts its own
os.register_at_fork(after_in_child=_pool.clear)


def is_async_callable(func: Any) -> bool:
    """Whether calling `func` returns a coroutine (`async def`, through partials and `__call__`)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or (callable(func) and inspect.iscoroutinefunction(func.__call__))


async def call_in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync `func` in tether's thread pool (`SYNC_THREADS` threads; the caller's context
    variables copied, as `asyncio.to_thread` does) and await its result if it is awaitable.
    The loop serves everything else meanwhile; `hub.*_sync` work from the thread."""
    if not _pool:
        _pool.append(ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="tether-sync"))
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    result = await asyncio.get_running_loop().run_in_executor(_pool[0], call)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_offloaded(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The HTTP rule: an `async def` is awaited on the loop, a sync `def` runs `call_in_thread`."""
    if is_async_callable(func):
        return await call_maybe_async(func, *args, **kwargs)
    return await call_in_thread(func, *args, **kwargs)


def _from_context_by_type(annotation: Any) -> bool:
    """A parameter annotated with a class of its own (`req: Request`) is filled from the
    context by type, whatever its name."""
    return isinstance(annotation, type) and annotation.__module__ != "builtins"


def _describe(func: Any) -> str:
    return f"handler {getattr(func, '__qualname__', func)!r}"
