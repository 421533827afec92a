"""docs/scaling.md's example, run as written on two nodes of one cluster (two Apps sharing an
in-process backplane; the Redis backplane is tested against a real redis-server in
tests/test_backplane.py)."""

from __future__ import annotations

import pathlib
import re

from tether.testing import TestClient

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "scaling.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def node():
    namespace = {"__name__": "scaling_doc"}
    exec(compile(BLOCKS[0], "docs/scaling.md block 0", "exec"), namespace)
    return namespace["app"]


def test_the_presence_example_runs_across_two_nodes(monkeypatch):
    monkeypatch.setenv("TETHER_BACKPLANE", "memory://docs-scaling")
    a, b = node(), node()
    with TestClient(a) as on_a, TestClient(b) as on_b:
        with on_a.websocket_connect("/rooms/lobby?name=ann") as ann:
            assert list(ann.receive_json()["here"].values()) == [{"name": "ann"}]
            assert ann.receive_json() == {"joined": "ann"}           # her own join, announced once
            with on_b.websocket_connect("/rooms/lobby?name=bob") as bob:
                here = bob.receive_json()["here"]
                assert sorted(info["name"] for info in here.values()) == ["ann", "bob"]
                assert bob.receive_json() == {"joined": "bob"}
                assert ann.receive_json() == {"joined": "bob"}         # from the other node
                bob.send_text("hi")
                assert ann.receive_json() == {"from": "bob", "text": "hi"}
                assert bob.receive_json() == {"from": "bob", "text": "hi"}
            assert ann.receive_json() == {"left": "bob"}
