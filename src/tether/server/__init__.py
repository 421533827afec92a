"""tether's native server: HTTP/1.1 and WebSocket on asyncio (uvloop) and httptools."""

from .serve import Server, run

__all__ = ["Server", "run"]
