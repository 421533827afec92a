"""HTTP requests and responses.

A handler's return value becomes a response by `to_response`: a `Response` as is; `str`
as text/plain, always (so an echo of user input is never served as a page: HTML goes
through `HTMLResponse` or `html()`); `dict`/`list` (or `jsonify(...)`) as JSON; `bytes` as
application/octet-stream; `None` as 204 No Content.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import mimetypes
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import Any, cast
from urllib.parse import parse_qsl, quote

from .datastructures import Headers, HTTPConnection, QueryParams, State
from .encoding import JSONText, compact_json
from .exceptions import HTTPException

__all__ = [
    "Request", "Response", "JSONResponse", "HTMLResponse", "html", "PlainTextResponse",
    "RedirectResponse", "StreamingResponse", "FileResponse", "EventSourceResponse",
    "HTTPException", "to_response", "body_allowed", "splitting_header",
]


class Request(HTTPConnection):
    """One HTTP request (also the handshake request of a WebSocket in the Microdot style)."""

    def __init__(self, method: str, path: str, query_string: str = "", headers: Headers | None = None,
                 body: bytes = b"", client: tuple[str, int] | None = None,
                 path_params: dict[str, Any] | None = None, http_version: str = "1.1",
                 scheme: str = "http") -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers if headers is not None else Headers()
        self.client = client
        self.path_params = path_params or {}
        self.http_version = http_version
        self.scheme = scheme
        self.state = State()
        self._body = body

    @property
    def args(self) -> QueryParams:
        """`query_params`, in Microdot's and Flask's spelling."""
        return self.query_params

    async def body(self) -> bytes:
        return self._body

    async def text(self) -> str:
        return self._body.decode("utf-8", "replace")

    async def json(self) -> Any:
        """The body decoded as JSON; HTTPException(400) when it is not."""
        try:
            return json.loads(self._body)
        except ValueError as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}") from None

    async def form(self) -> dict[str, Any]:
        """urlencoded or multipart/form-data fields; a file field gives a dict with
        `filename`, `content_type` and `content` (bytes)."""
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + self._body
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
            if not message.is_multipart():
                raise HTTPException(400, "malformed multipart/form-data body")
            fields: dict[str, Any] = {}
            for part in message.iter_parts():
                # policy.HTTP's header registry has decoded RFC 2231 parameters already, so
                # get_param gives a str (typeshed also allows the raw (charset, lang, value)).
                name = cast("str | None", part.get_param("name", header="content-disposition"))
                if name is None:
                    continue
                # decode=True gives a leaf part's bytes, None for a multipart one: never a Message.
                content = cast("bytes | None", part.get_payload(decode=True)) or b""
                filename = part.get_filename()
                if filename is not None:
                    fields[name] = {"filename": filename, "content_type": part.get_content_type(),
                                    "content": content}
                else:
                    fields[name] = content.decode(part.get_content_charset() or "utf-8", "replace")
            return fields
        return dict(parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class Response:
    """A complete response. `content` may be str (encoded UTF-8) or bytes."""

    media_type: str | None = None

    def __init__(self, content: Any = b"", status_code: int = 200,
                 headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
                 media_type: str | None = None) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.headers: list[tuple[str, str]] = list(headers.items() if isinstance(headers, dict) else headers or ())
        self.body = self.render(content)

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode("utf-8")
        raise TypeError(f"{type(self).__name__} content must be str or bytes, not {type(content).__name__}")

    def set_cookie(self, key: str, value: str = "", max_age: int | None = None, path: str = "/",
                   httponly: bool = False, secure: bool = False, samesite: str | None = "lax") -> None:
        cookie = f"{key}={quote(value)}; Path={path}"
        if max_age is not None:
            cookie += f"; Max-Age={max_age}"
        if httponly:
            cookie += "; HttpOnly"
        if secure:
            cookie += "; Secure"
        if samesite:
            cookie += f"; SameSite={samesite}"
        self.headers.append(("Set-Cookie", cookie))

    def header_list(self) -> list[tuple[str, str]]:
        """Headers to send, with Content-Type and Content-Length filled in when absent."""
        headers = list(self.headers)
        names = {name.lower() for name, _ in headers}
        if self.media_type and "content-type" not in names:
            media = self.media_type
            if media.startswith("text/") and "charset" not in media:
                media += "; charset=utf-8"
            headers.append(("Content-Type", media))
        if "content-length" not in names and not self.is_streaming:
            headers.append(("Content-Length", str(len(self.body))))
        return headers

    is_streaming = False

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        """The body as chunks (one, for a complete response). A road closes the generator
        (`aclose()`) when it stops early, so a subclass writes it as an async generator."""
        yield self.body


class PlainTextResponse(Response):
    media_type = "text/plain"


class HTMLResponse(Response):
    """An HTML page (text/html; charset=utf-8)."""

    media_type = "text/html"


def html(content: str, status_code: int = 200) -> HTMLResponse:
    """`content` served as an HTML page (a handler's plain `str` is always text/plain)."""
    return HTMLResponse(content, status_code)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return compact_json(content).encode("utf-8")


class RedirectResponse(Response):
    def __init__(self, url: str, status_code: int = 307, headers: Any = None) -> None:
        super().__init__(b"", status_code, headers)
        self.headers.append(("Location", url))


class StreamingResponse(Response):
    """A body produced by an (async or sync) iterator of str/bytes chunks, sent chunked."""

    is_streaming = True

    def __init__(self, content: AsyncIterable[Any] | Iterable[Any], status_code: int = 200,
                 headers: Any = None, media_type: str | None = None) -> None:
        self.content = content
        super().__init__(b"", status_code, headers, media_type)

    async def _items(self) -> AsyncIterator[Any]:
        if hasattr(self.content, "__aiter__"):
            async for item in self.content:
                yield item
        else:
            for item in self.content:
                yield item

    def encode_chunk(self, item: Any) -> bytes:
        return item.encode("utf-8") if isinstance(item, str) else bytes(item)

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        async for item in self._items():
            yield self.encode_chunk(item)


class FileResponse(Response):
    """A file from disk, read in 64 KiB chunks off the event loop."""

    chunk_size = 64 * 1024

    def __init__(self, path: str | os.PathLike[str], status_code: int = 200, headers: Any = None,
                 media_type: str | None = None, filename: str | None = None) -> None:
        self.path = os.fspath(path)
        guessed = mimetypes.guess_type(filename or self.path)[0] or "application/octet-stream"
        super().__init__(b"", status_code, headers, media_type or guessed)
        self.size = os.stat(self.path).st_size
        if filename:
            self.headers.append(("Content-Disposition", f"attachment; filename*=utf-8''{quote(filename)}"))

    def header_list(self) -> list[tuple[str, str]]:
        headers = super().header_list()
        return [(n, v) for n, v in headers if n.lower() != "content-length"] + [("Content-Length", str(self.size))]

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        with open(self.path, "rb") as handle:
            while chunk := await loop.run_in_executor(None, handle.read, self.chunk_size):
                yield chunk


class EventSourceResponse(StreamingResponse):
    """Server-Sent Events from an iterator of events.

    Each event is a str (sent as `data:` lines) or a dict with any of `data`, `event`,
    `id`, `retry` (`data` that is not a str is sent as JSON).
    """

    def __init__(self, content: AsyncIterable[Any] | Iterable[Any], status_code: int = 200,
                 headers: Any = None) -> None:
        super().__init__(content, status_code, headers, "text/event-stream")
        self.headers += [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]

    def encode_chunk(self, event: Any) -> bytes:
        if not isinstance(event, dict):
            event = {"data": event}
        lines = []
        for field in ("event", "id", "retry"):
            if event.get(field) is not None:
                lines.append(f"{field}: {event[field]}")
        data = event.get("data", "")
        if not isinstance(data, str):
            data = compact_json(data)
        lines += [f"data: {line}" for line in data.split("\n")]
        return ("\n".join(lines) + "\n\n").encode("utf-8")


def body_allowed(method: str, status: int) -> bool:
    """Whether a response to `method` with `status` carries a body: never for HEAD, 204
    or 304 (RFC 9110 6.4.1); every road sends only the head then."""
    return method != "HEAD" and status != 204 and status != 304


def splitting_header(headers: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The first (name, value) holding a CR, LF or NUL, else None: written as it is, it would
    end the head early and let what follows pose as headers or a body (response splitting)."""
    return next(((name, value) for name, value in headers if any(c in name + value for c in "\r\n\0")), None)


def to_response(value: Any) -> Response:
    """Turn a handler's return value into a Response (see the module doc)."""
    if isinstance(value, Response):
        return value
    if isinstance(value, JSONText):
        return Response(value, media_type="application/json")
    if isinstance(value, str):
        return Response(value, media_type="text/plain")
    if isinstance(value, (dict, list)):
        return JSONResponse(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Response(bytes(value), media_type="application/octet-stream")
    if value is None:
        return Response(b"", 204)
    raise TypeError(f"cannot turn a {type(value).__name__} returned by a handler into a response; "
                    "return str, bytes, dict, list or a Response")
