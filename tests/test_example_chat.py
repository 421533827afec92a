"""The chat example (examples/chat), served for real and driven by real clients."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time
import urllib.request

import pytest
from websockets.sync.client import connect

CHAT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "chat" / "app.py"


def load_chat_app():
    spec = importlib.util.spec_from_file_location("chat_example", CHAT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


@pytest.fixture
def chat(serve):
    return serve(load_chat_app())


def test_the_page_and_its_assets_are_served(chat):
    page = urllib.request.urlopen(chat.url("/")).read().decode()
    assert "<title>tether chat</title>" in page and "/static/chat.js" in page
    script = urllib.request.urlopen(chat.url("/static/chat.js")).read().decode()
    assert "new WebSocket" in script


def test_two_people_chat_in_a_room_and_see_joins_and_leaves(chat):
    with connect(chat.ws_url("/ws/gotham?name=batman")) as batman:
        assert json.loads(batman.recv()) == {"type": "welcome", "room": "gotham", "others": 0}
        with connect(chat.ws_url("/ws/gotham?name=robin")) as robin:
            assert json.loads(robin.recv()) == {"type": "welcome", "room": "gotham", "others": 1}
            assert json.loads(batman.recv()) == {"type": "join", "name": "robin"}
            robin.send("holy websockets")
            expected = {"type": "message", "name": "robin", "text": "holy websockets"}
            assert json.loads(batman.recv()) == expected and json.loads(robin.recv()) == expected
        assert json.loads(batman.recv()) == {"type": "leave", "name": "robin"}


def test_rooms_are_separate(chat):
    with connect(chat.ws_url("/ws/a?name=x")) as a, connect(chat.ws_url("/ws/b?name=y")) as b:
        a.recv(), b.recv()
        a.send("only a")
        assert json.loads(a.recv())["text"] == "only a"
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.2)


def test_a_person_in_a_browser_chats_with_a_python_client(chat):
    from .browser import Browser

    browser = Browser()
    try:
        with connect(chat.ws_url("/ws/lobby?name=python")) as bot:
            assert json.loads(bot.recv())["type"] == "welcome"
            browser.goto(chat.url("/"))
            browser.wait_for("location.pathname === '/' && document.readyState === 'complete'")
            # Fill the form and press Join, as a person would.
            browser.evaluate("document.getElementById('name').value = 'browser';"
                             "document.querySelector('#join button').click(); true")
            assert json.loads(bot.recv(timeout=10)) == {"type": "join", "name": "browser"}
            browser.wait_for("!document.getElementById('say').hidden")
            browser.evaluate("document.getElementById('text').value = 'hello from chromium';"
                             "document.querySelector('#say button').click(); true")
            assert json.loads(bot.recv(timeout=10)) == {
                "type": "message", "name": "browser", "text": "hello from chromium"}
            bot.send("<b>hello</b> browser")
            log = browser.wait_for("document.getElementById('log').innerText.includes('python: <b>hello</b>')"
                                   " && document.getElementById('log').innerText")
            assert "browser: hello from chromium" in log
            # The markup arrived as text: nothing was injected into the page.
            assert browser.evaluate("document.querySelectorAll('#log b').length") == 0
            status = browser.evaluate("document.getElementById('status').textContent")
            assert status == "connected to lobby as browser"
    finally:
        browser.close()
