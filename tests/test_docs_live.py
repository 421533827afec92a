"""README "Live channels": its server example runs as written and does what the text says,
driven over a real socket."""

from __future__ import annotations

import pathlib
import re
from typing import Any

from .test_live_protocol import peer, run

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = README.read_text().split("## Live channels")[1].split("\n## ")[0]
PYTHON = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def readme_app() -> Any:
    namespace: dict[str, Any] = {"__name__": "readme_live"}
    exec(compile(PYTHON[0], "README.md (Live channels)", "exec"), namespace)
    return namespace["app"]


def test_the_readme_live_example(serve_native: Any) -> None:
    server = serve_native(readme_app())

    async def scenario() -> None:
        anonymous = await peer(server, connect=False)
        assert (await anonymous.error("connect", token=None))["message"] == "log in first"
        assert (await anonymous.closed()) == (4001, "log in first")
        ann = await peer(server, connect=False)
        assert 3590 < (await ann.result("connect", token="ann"))["expires_in"] <= 3600
        joined = await ann.result("join", room="chat:lobby")
        assert list(joined["presence"].values()) == [{"user": "ann"}]
        refused = await ann.error("publish", room="chat:lobby", data={"not": "a text"})
        assert (refused["code"], refused["message"]) == (403, "a message is a text of at most 500 characters")
        await ann.result("publish", room="chat:lobby", data="hello")
        message = await ann.push("message")
        assert message["data"] == {"user": "ann", "text": "hello"} and message["offset"] == 1
    run(scenario())
