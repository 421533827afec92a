"""Typed parameter resolution, shared by HTTP endpoints and every WebSocket style.

A `Resolver` reads a handler's signature once, at registration. Per call it fills each
parameter by name: from the context (`request`, `websocket`, ...), then the path
parameters, then the query string, coerced to the annotation (`int`, `float`, `bool`,
`str`, `Optional[X]`, `list[X]` for repeated keys, or any class built from a string such as
`UUID` or an `Enum`). A parameter with a default is optional; a missing or uncoercible
required one raises `ParamError`, which the caller turns into HTTP 400.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .exceptions import ParamError

__all__ = ["ParamError", "Resolver", "coerce", "call_maybe_async"]

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
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _is_list(args[0])
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

    def resolve(self, path_params: Mapping[str, Any], query: Any, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The keyword arguments for one call; raise ParamError naming the first bad parameter."""
        kwargs: dict[str, Any] = {}
        for name, annotation, default, is_list, item in self.params:
            if context and name in context:
                kwargs[name] = context[name]
                continue
            if context and isinstance(annotation, type) and annotation.__module__ != "builtins":
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


async def call_maybe_async(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func` and await its result if it is awaitable."""
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _describe(func: Any) -> str:
    return f"handler {getattr(func, '__qualname__', func)!r}"
