"""A headless Chromium driven over the DevTools protocol (with the `websockets` client), for
tests that must see what a person sees in the page."""

from __future__ import annotations

import base64
import itertools
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from websockets.sync.client import connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0"]


class Browser:
    """One Chromium process with one page; `evaluate(js)` returns the expression's value."""

    def __init__(self) -> None:
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        assert executable, "chromium is not installed (make test installs it with apt-get)"
        self.profile = tempfile.mkdtemp(prefix="tether-chromium-")
        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            line = self.process.stderr.readline()
            assert line or self.process.poll() is None, "chromium exited during start-up"
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
            assert time.monotonic() < deadline, "chromium did not start within 30 s"
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self._connection = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.socket = self._connection.__enter__()
        self._ids = itertools.count(1)

    def command(self, method: str, **params: Any) -> dict:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=30))
            if reply.get("id") == message_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def goto(self, url: str) -> None:
        self.command("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def set_viewport(self, width: int, height: int, mobile: bool = False, scale: float = 1) -> None:
        """Show the page in a `width` x `height` CSS-pixel window (`mobile`: as a phone would,
        honouring the viewport meta tag)."""
        self.command("Emulation.setDeviceMetricsOverride", width=width, height=height,
                     deviceScaleFactor=scale, mobile=mobile)

    def screenshot(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write what the viewport shows to `path` as a PNG."""
        path = pathlib.Path(path)
        path.write_bytes(base64.b64decode(self.command("Page.captureScreenshot", format="png")["data"]))
        return path

    def wait_for(self, expression: str, timeout: float = 10) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
            time.sleep(0.05)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
