"""Small apps several test modules serve."""

from __future__ import annotations

from tether import App


def echo_app(goodbye: str | None = None, **settings) -> App:
    """`/echo` sends every message back; with `goodbye`, on_close returns it."""
    app = App(**settings)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    if goodbye is not None:
        echo.on_close(lambda websocket: goodbye)
    return app
