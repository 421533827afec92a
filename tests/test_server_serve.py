"""tether.server.serve: the native server's `Server` driven by hand on its own event loop
(start-up and shutdown as real processes are in tests/test_cli.py)."""

from __future__ import annotations

import asyncio
import logging

from tether import App
from tether.server.serve import Server, new_event_loop


def test_stop_before_serve_makes_serve_return_at_once(caplog):
    """Server.stop() before serve() raised AttributeError; now serve() shuts down as soon
    as it has started."""
    caplog.set_level(logging.INFO, "tether")
    loop = new_event_loop()
    server = Server(App(), "127.0.0.1", 0)
    server.stop()
    try:
        loop.run_until_complete(asyncio.wait_for(server.serve(install_signals=False), 10))
    finally:
        loop.close()
    assert any("shutting down" in record.getMessage() for record in caplog.records)
