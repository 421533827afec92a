"""The chat example (examples/chat), served for real and driven by real clients."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .browser import Browser
from .netutil import reserve_port, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAT = ROOT / "examples" / "chat" / "app.py"
# The README's picture of the demo. The screenshot test rewrites it only when asked
# (TETHER_UPDATE_SCREENSHOT=1), so that running the suite never modifies a tracked file.
SCREENSHOT = ROOT / "docs" / "chat.png"
ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _"
STATUS = "document.getElementById('status').textContent"
LOG = "document.getElementById('log').innerText"


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


def say_in_the_page(browser: Browser, text: str) -> None:
    """Type `text` in the message box and press Send, as a person would."""
    browser.evaluate(f"document.getElementById('text').value = {json.dumps(text)};"
                     "document.querySelector('#say button').click(); true")


def test_a_person_in_a_browser_chats_with_a_python_client(chat):
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
            say_in_the_page(browser, "hello from chromium")
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


def test_a_room_name_that_is_not_allowed_is_refused_in_words(chat):
    # The server accepts the handshake and closes at once with 1008 and the rule as the
    # reason, which a browser can read (a refused handshake would only show it code 1006).
    for path in ("/ws/a%2Fb", "/ws/" + "x" * 33, "/ws/a%20b", "/ws/"):
        with connect(chat.ws_url(path + "?name=x")) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                refused.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, ROOM_RULE), path
    with Browser() as browser:
        browser.goto(chat.url("/"))
        browser.wait_for("document.readyState === 'complete'")
        # A person types a room with a slash: the page answers before connecting.
        browser.evaluate("document.getElementById('name').value = 'browser';"
                         "document.getElementById('room').value = 'a/b';"
                         "document.querySelector('#join button').click(); true")
        error = browser.wait_for("!document.getElementById('error').hidden && document.getElementById('error').textContent")
        assert error == f"Cannot join “a/b”: {ROOM_RULE}."
        assert browser.evaluate("socket === null && !document.getElementById('join').hidden")
        # Without the page's check (an older page, a script), the server's refusal is what
        # the page shows, and it does not retry.
        browser.evaluate("document.getElementById('error').textContent = ''; connect('browser', 'a/b'); true")
        error = browser.wait_for("document.getElementById('error').textContent")
        assert error == f"Cannot join “a/b”: {ROOM_RULE}."
        assert browser.evaluate("socket.readyState === WebSocket.CLOSED && retries === 0 && ticker === null")
        assert browser.evaluate(STATUS) == "not connected"
        assert browser.evaluate("document.getElementById('say').hidden && !document.getElementById('join').hidden")


LAYOUT = """(() => {
  const log = document.getElementById('log'), input = document.getElementById('text');
  const inside = (rect, box) => rect.top >= box.top - 1 && rect.bottom <= box.bottom + 1
                                && rect.left >= box.left - 1 && rect.right <= box.right + 1;
  const viewport = {top: 0, left: 0, bottom: innerHeight, right: innerWidth};
  const items = [...log.children];
  return {
    width: innerWidth,
    pageScrollsSideways: document.documentElement.scrollWidth > innerWidth,
    itemsThatOverflow: items.filter((li) => li.scrollWidth > li.clientWidth).length,
    longWordLines: Math.round(items.find((li) => li.innerText.includes('xxxx')).getBoundingClientRect().height
                              / parseFloat(getComputedStyle(log).lineHeight)),
    logScrolls: log.scrollHeight > log.clientHeight,
    inputInView: inside(input.getBoundingClientRect(), viewport),
    sendInView: inside(document.getElementById('send').getBoundingClientRect(), viewport),
    newestInView: inside(items.at(-1).getBoundingClientRect(), log.getBoundingClientRect()),
  };
})()"""


@pytest.mark.parametrize("width, height, mobile", [(390, 700, True), (1280, 800, False)], ids=["phone", "desktop"])
def test_long_words_wrap_and_the_input_stays_in_view(chat, width, height, mobile):
    with Browser() as browser, connect(chat.ws_url("/ws/lobby?name=python")) as bot:
        bot.recv(timeout=10)
        browser.set_viewport(width, height, mobile=mobile)
        browser.goto(chat.url("/?name=browser&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as browser'")
        assert json.loads(bot.recv(timeout=10)) == {"type": "join", "name": "browser"}
        bot.send("x" * 400)  # one word far wider than any screen
        for number in range(60):
            bot.send(f"message {number}")
        browser.wait_for(f"{LOG}.endsWith('python: message 59')")
        while json.loads(bot.recv(timeout=10)).get("text") != "message 59":
            pass  # the bot reads its own messages too (a full queue would stall its closing)
        layout = browser.evaluate(LAYOUT)
        assert layout["width"] == width  # the viewport meta tag is honoured on a phone
        assert not layout["pageScrollsSideways"] and layout["itemsThatOverflow"] == 0
        assert layout["longWordLines"] > 2  # it wrapped
        assert layout["logScrolls"] and layout["newestInView"]
        assert layout["inputInView"] and layout["sendInView"]
        # The window shrinks (a phone's keyboard opens): the input and the newest message stay in view.
        browser.set_viewport(width, height // 2, mobile=mobile)
        layout = browser.wait_for(f"(() => {{ const layout = {LAYOUT}; return layout.newestInView && layout; }})()")
        assert layout["inputInView"] and layout["sendInView"] and not layout["pageScrollsSideways"]


class ChatProcess:
    """The chat example served as `make run` does (`python -m tether run app:app`, in its
    own process), on a port of our choosing: it can be stopped and started again there."""

    def __init__(self, port: int, log: pathlib.Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _answers(self) -> bool:
        assert self.process.poll() is None, f"the chat server exited: {self.log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(self.url("/"), timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def start(self) -> ChatProcess:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tether", "run", "app:app", "--port", str(self.port), "--log-level", "warning"],
                cwd=CHAT.parent, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=20, interval=0.05, message="the chat server to answer")
        return self

    def stop(self, how: str = "terminate") -> None:
        """`terminate`: a graceful shutdown (close 1001 to every page); `kill`: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if how == "terminate" else signal.SIGKILL)
            self.process.wait(20)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_the_page_reconnects_by_itself_when_the_server_comes_back(tmp_path, how):
    server = ChatProcess(reserve_port(), tmp_path / "server.log").start()
    try:
        with Browser() as browser:
            browser.goto(server.url("/?name=browser&room=lobby"))
            browser.wait_for(f"{STATUS} === 'connected to lobby as browser'")
            server.stop(how)
            lost = browser.wait_for(f"{STATUS}.startsWith('connection lost') && {STATUS}")
            assert re.fullmatch(r"connection lost — reconnecting( in \d+\.\d s)?…", lost), lost
            assert browser.evaluate("document.getElementById('send').disabled")
            # While the server stays away the page keeps trying, waiting longer each time:
            # the third wait is drawn from 1 to 2 s (0.5 s doubled twice, with jitter).
            browser.wait_for(f"parseFloat({STATUS}.match(/in ([0-9.]+) s/)?.[1]) > 1", timeout=15)
            server.start()  # the same port
            browser.wait_for(f"{STATUS} === 'connected to lobby as browser'", timeout=20)
            assert not browser.evaluate("document.getElementById('send').disabled")
            with connect(server.ws_url("/ws/lobby?name=python")) as bot:
                # The page is back in the room, and messages flow both ways.
                assert json.loads(bot.recv(timeout=10)) == {"type": "welcome", "room": "lobby", "others": 1}
                say_in_the_page(browser, "back again")
                assert json.loads(bot.recv(timeout=10)) == {"type": "message", "name": "browser", "text": "back again"}
                bot.send("welcome back")
                browser.wait_for(f"{LOG}.endsWith('python: welcome back')")
    finally:
        server.stop("kill")


def test_the_readme_screenshot(chat, tmp_path):
    """The conversation the README shows, played for real. With TETHER_UPDATE_SCREENSHOT=1
    the picture replaces docs/chat.png; otherwise it goes to a temporary file."""
    with Browser() as browser, connect(chat.ws_url("/ws/lobby?name=grace")) as grace:
        grace.recv(timeout=10)
        browser.set_viewport(720, 480)
        browser.goto(chat.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        grace.recv(timeout=10)
        grace.send("hi ada! this page is plain HTML, CSS and JS: no build step")
        browser.wait_for(f"{LOG}.endsWith('build step')")
        say_in_the_page(browser, "and long words wrap: https://example.org/tether/examples/chat/static/chat.js?reconnect=exponential_backoff_with_jitter")
        with connect(chat.ws_url("/ws/lobby?name=linus")) as linus:
            linus.recv(timeout=10)
            linus.send("stop the server and start it again: the page says so, then reconnects by itself")
            browser.wait_for(f"{LOG}.endsWith('by itself')")
        browser.wait_for(f"{LOG}.endsWith('linus left')")
        browser.evaluate("document.getElementById('text').value = 'nice'; document.activeElement.blur(); true")
        update = os.environ.get("TETHER_UPDATE_SCREENSHOT") == "1"
        picture = browser.screenshot(SCREENSHOT if update else tmp_path / "chat.png")
    assert picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size < 100_000
    assert SCREENSHOT.is_file(), "run with TETHER_UPDATE_SCREENSHOT=1 to write docs/chat.png"
