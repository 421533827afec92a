"""Foreign ASGI apps mounted under a prefix (`App.mount`), served on tether's native server.

The ASGI face hands a mounted app its own scope directly; on the native server each HTTP
request is bridged: `call_mounted_http` runs the app for one request and streams back what
it sends as a tether `Response`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from .http import Request, Response
from .types import ASGIApp, Message

__all__ = ["strip_prefix", "raw_headers", "call_mounted_http"]


def strip_prefix(path: str, prefix: str) -> str:
    """`path` as seen by an app mounted at `prefix`."""
    return path[len(prefix.rstrip("/")):] or "/"


def raw_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI wants them: lower-case latin-1 byte pairs."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def call_mounted_http(sub_app: ASGIApp, prefix: str, request: Request) -> Response:
    """Run a mounted ASGI app for one request of the native server; stream its response."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": request.http_version,
        "method": request.method, "scheme": request.scheme, "root_path": prefix.rstrip("/"),
        "path": strip_prefix(request.path, prefix), "raw_path": request.path.encode("utf-8"),
        "query_string": request.query_string.encode("latin-1"),
        "headers": raw_headers(request.headers.items()), "client": request.client, "server": None,
    }
    body = await request.body()
    requested = asyncio.Event()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no more events until the app gives up
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set_result(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await chunks.put(message["body"])
            if not message.get("more_body", False):
                await chunks.put(None)

    task: asyncio.Future[Any] = asyncio.ensure_future(sub_app(scope, receive, send))
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()  # raises what the app raised
        raise RuntimeError(f"the app mounted at {prefix} returned without a response")
    start = started.result()
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in start.get("headers", ())]
    return _BridgedResponse(start["status"], headers, chunks, task)


class _BridgedResponse(Response):
    """A mounted app's response, relayed chunk by chunk as the app sends it."""

    def __init__(self, status: int, headers: list[tuple[str, str]], chunks: asyncio.Queue[bytes | None],
                 task: asyncio.Future[Any]) -> None:
        super().__init__(b"", status, headers)
        self.is_streaming = not any(name.lower() == "content-length" for name, _ in headers)
        self._chunks = chunks
        self._task = task

    def header_list(self) -> list[tuple[str, str]]:
        return list(self.headers)

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            while (chunk := await self._chunks.get()) is not None:
                yield chunk
        finally:
            self._task.cancel()
