"""tether.patterns: the route pattern syntax, as registering a route meets it."""

from __future__ import annotations

import pytest

from tether import App


def test_a_route_with_an_unbalanced_brace_is_refused_at_registration():
    app = App()
    with pytest.raises(ValueError, match=r"route '/rooms/\{room': unbalanced \{"):
        @app.websocket("/rooms/{room")
        async def room(websocket, room: str): ...
