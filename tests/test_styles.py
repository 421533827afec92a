"""tether.styles: `adapt`, which picks the handler style from what a route was given, and
refuses what is none of them at registration, naming the route."""

from __future__ import annotations

import pytest

from tether import App


def test_a_plain_class_on_a_path_with_a_parameter_is_a_clear_type_error():
    """It used to raise KeyError('room'): the path's {room} was consumed by str.format()."""
    app = App()

    class NotAnEndpoint:
        pass

    with pytest.raises(TypeError, match=r"route '/rooms/\{room\}': class .*NotAnEndpoint is not a GenericWebsocket"):
        app.websocket("/rooms/{room}")(NotAnEndpoint)
