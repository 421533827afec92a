"""Request data shared by HTTP and WebSocket: headers, query parameters, cookies, state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

__all__ = ["Headers", "QueryParams", "State", "URL", "HTTPConnection", "parse_cookies"]


class Headers:
    """Read-only, case-insensitive multi-dict of HTTP headers.

    `headers["X-Name"]` and `.get()` return the first value; `.getlist()` all of them.
    """

    __slots__ = ("_items", "_index", "_joined")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)
        self._index: dict[str, str] | None = None
        self._joined: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        if self._index is None:
            index: dict[str, str] = {}
            for name, value in self._items:
                index.setdefault(name.lower(), value)
            self._index = index
        return self._index

    def get(self, name: str, default: Any = None) -> Any:
        return self._lookup().get(name.lower(), default)

    def getlist(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key.lower() == name]

    def joined(self) -> dict[str, str]:
        """Lower-case names mapped to their values joined with ", " (RFC 9110 5.3); computed
        once (headers are read-only), so do not modify the returned dict."""
        if self._joined is None:
            joined: dict[str, str] = {}
            for name, value in self._items:
                key = name.lower()
                joined[key] = f"{joined[key]}, {value}" if key in joined else value
            self._joined = joined
        return self._joined

    def __getitem__(self, name: str) -> str:
        try:
            return self._lookup()[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        """How many distinct names (as iteration and `keys()` give them; `items()` has every line)."""
        return len(self._lookup())

    def keys(self) -> list[str]:
        return list(self._lookup())

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class QueryParams:
    """Read-only multi-dict of query-string parameters, in the order they appeared.

    `params["k"]` and `.get("k")` return the last value given for `k` (as most frameworks
    do); `.getlist("k")` returns every value.
    """

    __slots__ = ("_items", "_dict")

    def __init__(self, query: str | Iterable[tuple[str, str]] = "") -> None:
        if isinstance(query, str):
            self._items = parse_qsl(query, keep_blank_values=True)
        else:
            self._items = list(query)
        self._dict = dict(self._items)

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def getlist(self, key: str) -> list[str]:
        return [value for name, value in self._items if name == key]

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def keys(self) -> list[str]:
        return list(self._dict)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_dict(self) -> dict[str, str]:
        return dict(self._dict)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryParams):
            return self._items == other._items
        if isinstance(other, dict):
            return self._dict == other
        return NotImplemented

    # Unhashable, as Python makes any class that defines __eq__ alone (it equals a dict);
    # typeshed's object.__hash__ is a method, hence the ignore.
    __hash__: ClassVar[None]  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


def parse_cookies(header: str | None) -> dict[str, str]:
    """Parse a Cookie header (`a=1; b=2`) leniently: malformed pairs are skipped."""
    cookies: dict[str, str] = {}
    if not header:
        return cookies
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if sep and name:
            cookies[name] = value.strip().strip('"')
    return cookies


class State:
    """A free attribute bag (`websocket.state.user = ...`); a missing attribute is an AttributeError."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"state has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"State({vars(self)!r})"


class URL(str):
    """A request's full URL (`str(url)`), with its parts as Starlette's `URL` names them:
    `scheme`, `netloc`, `hostname`, `port`, `path`, `query`."""

    __slots__ = ()

    @property
    def _parts(self) -> SplitResult:
        return urlsplit(self)

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def netloc(self) -> str:
        return self._parts.netloc

    @property
    def hostname(self) -> str | None:
        return self._parts.hostname

    @property
    def port(self) -> int | None:
        return self._parts.port

    @property
    def path(self) -> str:
        return self._parts.path

    @property
    def query(self) -> str:
        return self._parts.query


class HTTPConnection:
    """What an HTTP request and a WebSocket handshake share: the query string and headers,
    parsed on first use into `query_params` and `cookies`, and the `url`."""

    scheme: str
    path: str
    query_string: str
    headers: Headers

    @property
    def url(self) -> URL:
        """The URL the client asked for: scheme (http/https, ws/wss), Host header, path, query."""
        host = self.headers.get("host", "localhost")
        query = f"?{self.query_string}" if self.query_string else ""
        return URL(f"{self.scheme}://{host}{self.path}{query}")
    _query_params: QueryParams | None = None
    _cookies: dict[str, str] | None = None

    @property
    def query_params(self) -> QueryParams:
        """The query string's parameters (`.get()`, `.getlist()`)."""
        if self._query_params is None:
            self._query_params = QueryParams(self.query_string)
        return self._query_params

    @property
    def cookies(self) -> dict[str, str]:
        """The Cookie header's name/value pairs."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get("cookie"))
        return self._cookies
