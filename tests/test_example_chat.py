"""The chat example (examples/chat), on live channels, served for real and driven by real
clients: headless Chromium pages (tests/browser.py) and a small Python client of the live
protocol. The in-process tests serve the app with the `serve` fixture; the restart tests run
it as `make run` does (`python -m tether run app:app` in examples/chat, its own process),
alone (history kept in the process) and as two nodes on a real redis-server."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import pathlib
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .browser import Browser
from .netutil import reserve_port
from .processes import AppProcess, app_processes_fixture  # noqa: F401
from .redisutil import redis_server_fixture  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAT = ROOT / "examples" / "chat" / "app.py"
# The README's picture of the demo. The screenshot test rewrites it only when asked
# (TETHER_UPDATE_SCREENSHOT=1), so that running the suite never modifies a tracked file.
SCREENSHOT = ROOT / "docs" / "chat.png"
ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _"
STATUS = "document.getElementById('status').textContent"
LOG = "document.getElementById('log').innerText"
ONLINE = "document.getElementById('online').innerText"
NOTICE = "(document.getElementById('notice').hidden ? '' : document.getElementById('notice-text').textContent)"
# The messages the page shows, in the order it shows them: [[name, text], ...].
SHOWN = ("[...document.querySelectorAll('#log li:not(.divider)')]"
         ".map((li) => [li.querySelector('.who').textContent.slice(0, -2), li.lastChild.textContent])")
NOT_RECOVERED = "Some messages could not be recovered; reloading history."


def load_chat_module():
    spec = importlib.util.spec_from_file_location("chat_example", CHAT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def chat(serve):
    module = load_chat_module()
    server = serve(module.app)
    server.module = module
    return server


def login(base_url: str, name: Any) -> tuple[int, dict]:
    """POST /login: (status, JSON body)."""
    request = urllib.request.Request(f"{base_url}/login", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class LiveClient:
    """Just enough of the live protocol (docs/live-protocol.md) for a test, on `websockets`'
    sync client: `ask(op, **fields)` sends a command and returns its reply; the pushes met
    meanwhile are kept in `pushes` (pings answered)."""

    def __init__(self, ws_url: str, token: str | None) -> None:
        self.socket = connect(ws_url, subprotocols=["tether.live.v1"], open_timeout=10).__enter__()
        self.ids = itertools.count(1)
        self.pushes: list[dict] = []
        self.connected = self.ask("connect", token=token)

    def _receive(self, timeout: float) -> dict:
        message = json.loads(self.socket.recv(timeout=timeout))
        if message.get("push") == "ping":
            self.socket.send('{"op": "pong"}')
        elif "push" in message:
            self.pushes.append(message)
        return message

    def ask(self, op: str, **fields: Any) -> dict:
        command_id = next(self.ids)
        self.socket.send(json.dumps({"op": op, "id": command_id, **fields}))
        deadline = time.monotonic() + 10
        while True:
            message = self._receive(max(0.01, deadline - time.monotonic()))
            if message.get("id") == command_id:
                return message

    def messages(self, room: str = "chat:lobby") -> list[dict]:
        return [push["data"] for push in self.pushes if push["push"] == "message" and push["room"] == room]

    def wait_for_message(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any(message.get("text") == text for message in self.messages()):
            self._receive(max(0.01, deadline - time.monotonic()))

    def say(self, text: str) -> None:
        reply = self.ask("publish", room="chat:lobby", data={"text": text})
        assert "result" in reply, reply

    def close(self) -> None:
        self.socket.__exit__(None, None, None)

    def __enter__(self) -> LiveClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def live_client(base_url: str, name: str) -> LiveClient:
    status, body = login(base_url, name)
    assert status == 200, body
    return LiveClient(base_url.replace("http://", "ws://") + "/live", body["token"])


# -- the server's side: the page, the login, the room's hooks ------------------------------------

def test_the_page_and_its_assets_are_served(chat):
    page = urllib.request.urlopen(chat.url("/")).read().decode()
    assert "<title>tether chat</title>" in page and 'type="module" src="/static/chat.js"' in page
    script = urllib.request.urlopen(chat.url("/static/chat.js")).read().decode()
    assert 'import { Client } from "/tether.js";' in script
    assert urllib.request.urlopen(chat.url("/static/chat.css")).status == 200
    client = urllib.request.urlopen(chat.url("/tether.js")).read().decode()
    assert "export class Client" in client


def test_login_gives_a_signed_token_that_the_live_endpoint_turns_into_the_name(chat):
    base = chat.url("").rstrip("/")
    for name, error in (("", "type a name"), ("   ", "type a name"), (None, "type a name"), (7, "type a name"),
                        ("x" * 33, "a name is at most 32 printable characters"),
                        ("bell\a", "a name is at most 32 printable characters")):
        assert login(base, name) == (400, {"error": error}), name
    status, body = login(base, "  Ada Lovelace ")
    assert status == 200 and body["name"] == "Ada Lovelace"
    ada = LiveClient(chat.ws_url("/live"), body["token"])
    try:
        assert ada.connected["result"]["expires_in"] == pytest.approx(3600, abs=5)
        joined = ada.ask("join", room="chat:lobby", info={"name": "someone else"})["result"]
        assert joined["recovered"] is False and joined["position"]["offset"] == 0
        # The presence info is the room hook's, from the identity: not what the client sent.
        assert joined["presence"] == {ada.connected["result"]["client"]: {"name": "Ada Lovelace"}}
        # Messages are checked, stripped, and signed with the sender's name.
        assert ada.ask("publish", room="chat:lobby", data={"text": "  hello  ", "name": "mallory"})["result"] == {}
        for data, reason in (({"text": "   "}, 'a message is {"text": "..."} with some text'),
                             ("hello", 'a message is {"text": "..."} with some text'),
                             ({"text": 5}, 'a message is {"text": "..."} with some text'),
                             ({"text": "x" * 1001}, "a message is at most 1000 characters")):
            error = ada.ask("publish", room="chat:lobby", data=data)["error"]
            assert (error["code"], error["message"]) == (403, reason), data
        assert ada.ask("publish", room="chat:lobby", data={"text": " " + "y" * 1000 + " "})["result"] == {}
        ada.wait_for_message("y" * 1000)
        assert ada.messages() == [{"name": "Ada Lovelace", "text": "hello"}, {"name": "Ada Lovelace", "text": "y" * 1000}]
        history = ada.ask("history", room="chat:lobby", since=0)["result"]
        assert [message["offset"] for message in history["messages"]] == [1, 2]
        # A room name that breaks the rule is refused in words.
        error = ada.ask("join", room="chat:a/b")["error"]
        assert (error["code"], error["message"]) == (403, ROOM_RULE)
    finally:
        ada.close()

    # A token this server did not make, a tampered one, an expired one, none: refused (4001).
    make_token = chat.module.make_token
    name, expires, signature = make_token("ada").split(".")
    tampered = f"{name}.{int(expires) + 3600}.{signature}"
    for token, reason in (("made-up", "not a token of this server (log in again)"),
                          (tampered, "not a token of this server (log in again)"),
                          (make_token("ada", lifetime=-10), "token expired"),
                          (None, "log in first")):
        with pytest.raises(ConnectionClosed) as closed:
            refused = LiveClient(chat.ws_url("/live"), token)
            assert refused.connected["error"]["code"] == 401
            refused.socket.recv(timeout=10)
        assert closed.value.rcvd.reason == reason, token
        assert closed.value.rcvd.code == (4003 if reason == "token expired" else 4001)


def test_rooms_are_separate(chat):
    base = chat.url("").rstrip("/")
    with live_client(base, "ada") as ada, live_client(base, "bob") as bob:
        ada.ask("join", room="chat:a")
        assert list(bob.ask("join", room="chat:b")["result"]["presence"].values()) == [{"name": "bob"}]
        ada.ask("publish", room="chat:a", data={"text": "only a"})
        assert ada.ask("history", room="chat:a")["result"]["messages"] == [
            {"offset": 1, "data": {"name": "ada", "text": "only a"}}]
        assert bob.ask("history", room="chat:b")["result"]["messages"] == []
        assert bob.messages("chat:a") == bob.messages("chat:b") == []
        assert [push["push"] for push in bob.pushes] == ["presence"]  # its own join, nothing of room a


# -- the page ------------------------------------------------------------------------------------

def log_in_with_the_form(browser: Browser, url: str, name: str, room: str = "lobby") -> None:
    """Open the page, type a name (and a room) and press Join, as a person would."""
    browser.goto(url)
    browser.wait_for("document.readyState === 'complete' && !document.getElementById('join').hidden")
    browser.evaluate(f"document.getElementById('name').value = {json.dumps(name)};"
                     f"document.getElementById('room').value = {json.dumps(room)};"
                     "document.querySelector('#join button').click(); true")


def say_in_the_page(browser: Browser, text: str) -> None:
    """Type `text` in the message box and press Send, as a person would."""
    browser.evaluate(f"document.getElementById('text').value = {json.dumps(text)};"
                     "document.querySelector('#say button').click(); true")


def online(browser: Browser) -> list[str]:
    return browser.evaluate("[...document.querySelectorAll('#online li')].map((li) => li.textContent)")


def test_two_people_see_each_other_online_and_chat_and_a_third_gets_the_history(chat):
    with Browser() as ada, Browser() as grace:
        log_in_with_the_form(ada, chat.url("/"), "ada")
        ada.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        assert online(ada) == ["ada (you)"]
        assert ada.evaluate("location.search") == "?name=ada&room=lobby"  # a reload comes back here
        log_in_with_the_form(grace, chat.url("/"), "grace")
        grace.wait_for(f"{STATUS} === 'connected to lobby as grace'")
        assert online(grace) == ["ada", "grace (you)"]  # from the join's reply
        ada.wait_for(f"{ONLINE}.includes('grace')", timeout=1)  # within a second of grace's join
        assert online(ada) == ["ada (you)", "grace"]
        assert ada.evaluate("document.getElementById('count').textContent") == "(2)"

        say_in_the_page(ada, "hello grace")
        grace.wait_for(f"{LOG}.includes('hello grace')")
        say_in_the_page(grace, "  <b>hi</b> ada  ")
        ada.wait_for(f"{LOG}.includes('ada')")
        conversation = [["ada", "hello grace"], ["grace", "<b>hi</b> ada"]]
        assert ada.wait_for(f"(() => {{ const shown = {SHOWN}; return shown.length === 2 && shown; }})()") == conversation
        assert grace.wait_for(f"(() => {{ const shown = {SHOWN}; return shown.length === 2 && shown; }})()") == conversation
        # The markup arrived as text: nothing was injected into the page.
        assert ada.evaluate("document.querySelectorAll('#log b').length") == 0
        assert ada.evaluate("document.getElementById('text').value") == ""
        assert grace.evaluate(NOTICE) == "" and ada.evaluate(NOTICE) == ""

        # A third page: the history on joining, in order, and everyone online.
        with Browser() as linus:
            log_in_with_the_form(linus, chat.url("/"), "linus")
            linus.wait_for(f"{STATUS} === 'connected to lobby as linus'")
            assert linus.wait_for(f"(() => {{ const shown = {SHOWN}; return shown.length === 2 && shown; }})()") \
                == conversation
            assert online(linus) == ["ada", "grace", "linus (you)"]
            ada.wait_for(f"{ONLINE}.includes('linus')", timeout=1)
            say_in_the_page(linus, "hi both")
            for page in (ada, grace, linus):
                assert page.wait_for(f"(() => {{ const shown = {SHOWN}; return shown.length === 3 && shown; }})()") \
                    == [*conversation, ["linus", "hi both"]]
        # linus closed his browser: he leaves the online list.
        ada.wait_for(f"!{ONLINE}.includes('linus')", timeout=5)
        assert online(ada) == ["ada (you)", "grace"]


def test_names_and_rooms_that_are_not_allowed_are_refused_in_words(chat):
    with Browser() as browser:
        log_in_with_the_form(browser, chat.url("/"), "   ")
        error = browser.wait_for("!document.getElementById('error').hidden && document.getElementById('error').textContent")
        assert error == "Cannot log in: type a name."
        # A room with a slash: the page answers before logging in.
        log_in_with_the_form(browser, chat.url("/"), "ada", "a/b")
        error = browser.wait_for("!document.getElementById('error').hidden && document.getElementById('error').textContent")
        assert error == f"Cannot join “a/b”: {ROOM_RULE}."
        assert browser.evaluate("window.chat.client === null && document.getElementById('say').hidden")
        assert browser.evaluate(STATUS) == "not connected"
        # The form still works.
        browser.evaluate("document.getElementById('room').value = 'lobby';"
                         "document.querySelector('#join button').click(); true")
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")


LAYOUT = """(() => {
  const log = document.getElementById('log'), input = document.getElementById('text');
  const people = document.getElementById('people');
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
    onlineInView: inside(people.getBoundingClientRect(), viewport),
    newestInView: inside(items.at(-1).getBoundingClientRect(), log.getBoundingClientRect()),
  };
})()"""


@pytest.mark.parametrize("width, height, mobile", [(390, 700, True), (1280, 800, False)], ids=["phone", "desktop"])
def test_long_words_wrap_and_the_input_stays_in_view(chat, width, height, mobile):
    with Browser() as browser:
        browser.set_viewport(width, height, mobile=mobile)
        browser.goto(chat.url("/?name=browser&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as browser'")
        publish = chat.module.app.hub.publish  # server code publishing: no rate limit to mind
        chat.call(publish("chat:lobby", {"name": "python", "text": "x" * 400}))  # far wider than any screen
        for number in range(60):
            chat.call(publish("chat:lobby", {"name": "python", "text": f"message {number}"}))
        browser.wait_for(f"{LOG}.endsWith('python: message 59')")
        layout = browser.evaluate(LAYOUT)
        assert layout["width"] == width  # the viewport meta tag is honoured on a phone
        assert not layout["pageScrollsSideways"] and layout["itemsThatOverflow"] == 0
        assert layout["longWordLines"] > 2  # it wrapped
        assert layout["logScrolls"] and layout["newestInView"]
        assert layout["inputInView"] and layout["sendInView"] and layout["onlineInView"]
        # The window shrinks (a phone's keyboard opens): the input and the newest message stay in view.
        browser.set_viewport(width, height // 2, mobile=mobile)
        layout = browser.wait_for(f"(() => {{ const layout = {LAYOUT}; return layout.newestInView && layout; }})()")
        assert layout["inputInView"] and layout["sendInView"] and not layout["pageScrollsSideways"]


# -- restarts: the demo as its own process -----------------------------------------------------------

@pytest.fixture
def chat_processes(app_processes, tmp_path):
    """`chat_processes(**env)` starts the demo as `make run` does (`python -m tether run app:app`
    in examples/chat, its own process: tests/processes.py) on a port of our choosing, ready once
    GET / answers: it can be killed or stopped and started again there (all killed after the
    test). Its log goes to the test's tmp_path, not to examples/chat."""

    def start(**env: str) -> AppProcess:
        port = reserve_port()
        return app_processes(CHAT.parent, "app:app", port=port, env=env, log=tmp_path / f"server-{port}.log",
                             ready="/")

    return start


def shown_count(browser: Browser, count: int, timeout: float = 10) -> list[list[str]]:
    """Wait until the page shows `count` messages (or more); return them."""
    return browser.wait_for(f"(() => {{ const shown = {SHOWN}; return shown.length >= {count} && shown; }})()",
                            timeout=timeout)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_without_redis_the_page_comes_back_and_says_what_could_not_be_recovered(chat_processes, how):
    # The history lives in the process (no backplane): a new process starts the room afresh,
    # so the rejoin is not recovered, and the page says so.
    server = chat_processes()
    with Browser() as browser:
        browser.goto(server.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        browser.evaluate("window.samePage = true")  # gone if the page were reloaded
        say_in_the_page(browser, "before the restart")
        shown_count(browser, 1)
        if how == "terminate":
            server.stop()  # a graceful shutdown: close 1001 to every page
        else:
            server.kill()  # a crash
        browser.wait_for(f"{STATUS} === 'connection lost — reconnecting…'")
        assert browser.evaluate("document.getElementById('send').disabled")
        assert browser.evaluate("document.getElementById('people').classList.contains('stale')")
        server.start()  # the same port
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'", timeout=20)
        assert browser.wait_for(NOTICE) == NOT_RECOVERED
        assert browser.evaluate("[...document.querySelectorAll('#log li.divider')].map((li) => li.textContent)") == [
            "some messages could not be recovered"]
        assert not browser.evaluate("document.getElementById('send').disabled")
        assert online(browser) == ["ada (you)"]
        with live_client(server.url(""), "grace") as grace:
            grace.ask("join", room="chat:lobby")
            grace.say("welcome back")
            assert shown_count(browser, 2) == [["ada", "before the restart"], ["grace", "welcome back"]]
            # What was shown before stays, above the divider; the new messages come below it.
            assert browser.evaluate("document.querySelector('#log li.divider').nextElementSibling.textContent") \
                == "grace: welcome back"
            say_in_the_page(browser, "thanks")
            grace.wait_for_message("thanks")
        assert browser.evaluate("window.samePage") is True
        # The notice can be dismissed.
        browser.evaluate("document.getElementById('dismiss').click(); true")
        assert browser.evaluate(NOTICE) == ""


def test_on_redis_after_a_crash_the_page_shows_what_was_said_meanwhile_once_in_order(chat_processes, redis_server):
    # Two nodes on one Redis: the page's node is killed, the other goes on taking messages,
    # and the first comes back on its port. The room's history lives in Redis.
    node = chat_processes(TETHER_BACKPLANE=redis_server.url)
    other = chat_processes(TETHER_BACKPLANE=redis_server.url)
    with Browser() as browser, live_client(other.url(""), "grace") as grace:
        grace.ask("join", room="chat:lobby")
        browser.goto(node.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        browser.wait_for(f"{ONLINE}.includes('grace')", timeout=1)  # presence across the nodes
        browser.evaluate("window.samePage = true")  # gone if the page were reloaded
        for number in range(1, 4):
            grace.say(f"message {number}")
        shown_count(browser, 3)

        node.kill()
        browser.wait_for(f"{STATUS} === 'connection lost — reconnecting…'")
        for number in range(4, 9):  # said while the page's node is down
            grace.say(f"message {number}")
        node.start()  # the same port
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'", timeout=20)
        grace.say("message 9")  # after the rejoin
        shown = shown_count(browser, 9)
        # Every message once, in order, without a reload, and nothing to apologise for.
        assert shown == [["grace", f"message {number}"] for number in range(1, 10)]
        assert browser.evaluate("window.samePage") is True
        assert browser.evaluate("[window.chat.joins, window.chat.room.recovered]") == [2, True]
        assert browser.evaluate(NOTICE) == ""
        assert browser.evaluate("document.querySelectorAll('#log li.divider').length") == 0
        offsets = browser.evaluate("[...document.querySelectorAll('#log li')].map((li) => Number(li.dataset.offset))")
        assert offsets == list(range(1, 10))
        say_in_the_page(browser, "back")
        grace.wait_for_message("back")
        assert shown_count(browser, 10)[-1] == ["ada", "back"]


def test_the_readme_screenshot(serve_native, tmp_path):
    """The conversation the README shows, played for real. With TETHER_UPDATE_SCREENSHOT=1
    the picture replaces docs/chat.png; otherwise it goes to a temporary file."""
    chat = serve_native(load_chat_module().app)
    base = chat.url("").rstrip("/")
    with Browser() as browser, live_client(base, "grace") as grace, live_client(base, "linus") as linus:
        for client in (grace, linus):
            client.ask("join", room="chat:lobby")
        grace.say("hi ada! this page is plain HTML, CSS and tether.js: no build step")
        browser.set_viewport(900, 600)
        browser.goto(chat.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        shown_count(browser, 1)  # the history, on joining
        say_in_the_page(browser, "hi grace! the online list comes from presence, and the room's last messages "
                                 "show on joining")
        shown_count(browser, 2)
        linus.say("stop the server and start it again: the page reconnects by itself, "
                  "and with Redis it shows what was said meanwhile, once")
        grace.say("try it: make run, then open two tabs")
        shown_count(browser, 4)
        assert online(browser) == ["ada (you)", "grace", "linus"]
        browser.evaluate("document.getElementById('text').value = 'nice'; document.activeElement.blur(); true")
        update = os.environ.get("TETHER_UPDATE_SCREENSHOT") == "1"
        picture = browser.screenshot(SCREENSHOT if update else tmp_path / "chat.png")
    assert picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size < 100_000
    assert SCREENSHOT.is_file(), "run with TETHER_UPDATE_SCREENSHOT=1 to write docs/chat.png"


def test_on_redis_the_online_list_stays_current_after_a_recovered_rejoin(chat_processes, redis_server):
    node = chat_processes(TETHER_BACKPLANE=redis_server.url)
    other = chat_processes(TETHER_BACKPLANE=redis_server.url)
    with Browser() as browser, live_client(other.url(""), "grace") as grace:
        grace.ask("join", room="chat:lobby")
        browser.goto(node.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        grace.say("hello")
        shown_count(browser, 1)
        node.kill()
        browser.wait_for(f"{STATUS} === 'connection lost — reconnecting…'")
        node.start()
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'", timeout=20)
        assert browser.evaluate("[window.chat.joins, window.chat.room.recovered]") == [2, True]
        with live_client(other.url(""), "linus") as linus:  # someone comes in on the other node
            linus.ask("join", room="chat:lobby")
            browser.wait_for(f"{ONLINE}.includes('linus')", timeout=2)


def test_on_redis_a_history_that_was_lost_is_said_on_the_page(chat_processes, redis_server):
    # The room's history is wiped from Redis under a running node (FLUSHALL: as a Redis that
    # lost its data): the next message starts a new epoch. The node tells its members (a
    # `lost` push); the page says so, reads the history again and goes on below a divider.
    node = chat_processes(TETHER_BACKPLANE=redis_server.url)
    with Browser() as browser, live_client(node.url(""), "grace") as grace:
        grace.ask("join", room="chat:lobby")
        browser.goto(node.url("/?name=ada&room=lobby"))
        browser.wait_for(f"{STATUS} === 'connected to lobby as ada'")
        grace.say("one")
        grace.say("two")
        shown_count(browser, 2)
        redis_server.execute("FLUSHALL")
        grace.say("three")
        assert shown_count(browser, 3) == [["grace", "one"], ["grace", "two"], ["grace", "three"]]
        notice = browser.wait_for(NOTICE)
        assert notice.startswith("Some messages may not have reached this page (the history of room 'chat:lobby' "
                                 "was lost (epoch ") and notice.endswith("); reloading history.")
        assert browser.evaluate("[...document.querySelectorAll('#log li')].map((li) => li.textContent)") == [
            "grace: one", "grace: two", "the room's history started again", "grace: three"]
        grace.say("four")
        assert shown_count(browser, 4)[-1] == ["grace", "four"]
        assert browser.evaluate("window.chat.notices.length") == 1  # the history was read without a failure
        assert browser.evaluate(STATUS) == "connected to lobby as ada"
