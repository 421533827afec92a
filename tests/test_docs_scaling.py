"""docs/scaling.md's example, run as written on two nodes of one cluster (two Apps sharing an
in-process backplane; every engine is tested against real servers in tests/test_backplane*.py),
and every backplane URL the doc gives, taken as written by its engine."""

from __future__ import annotations

import pathlib
import re

import pytest

from tether.backplane import from_url
from tether.backplane.envelope import new_node_id
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


# Every backplane URL the doc gives as an example (in a `--backplane` command or its URL
# table), each read by its engine as written: the engine's module loads and takes the URL.
EXAMPLE_URLS = sorted(set(re.findall(r"--backplane '?((?:redis\+sentinel|redis\+cluster|nats|redis)://[^\s']+)",
                                     DOC.read_text()))
                      | set(re.findall(r"^\| `((?:redis\+sentinel|redis\+cluster|nats|redis)://[^`…]+)`",
                                       DOC.read_text(), re.M)))


def test_the_docs_example_urls_cover_every_engine():
    assert {url.partition("://")[0] for url in EXAMPLE_URLS} == {"redis", "redis+sentinel", "redis+cluster", "nats"}


@pytest.mark.parametrize("url", EXAMPLE_URLS)
def test_every_example_backplane_url_is_taken_by_its_engine(url):
    backplane = from_url(url, new_node_id())  # parsed, not connected
    assert backplane.cluster and type(backplane).__module__.startswith("tether.backplane.")
