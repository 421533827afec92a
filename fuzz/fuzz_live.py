"""Fuzz target: live channels (`tether.live`): the commands a client sends to `app.live(path)`,
and, in its fast mode, the sans-I/O reader of one command (`tether.live.commands.read_command`).

`check(data)` runs one input and raises (AssertionError, or what escaped) when the outcome is
not one docs/live-protocol.md documents. The input is

    byte 0   bits 0-1: the app's settings (PROFILES: 0 the defaults, 1 small limits, 2 a bucket
             and an error budget so big that thousands of joins reach `max_rooms`); 3: the
             reader mode (below). Bit 2 set = the client sends a valid `connect` first (token
             "user:fuzz", id 0). Bit 3 set = the client ends with a close (1000), else its
             connection is dropped. Bits 4-5: what the client offers in the handshake (0:
             tether.live.v1; 1: nothing; 2: "chat, tether.live.v1"; 3: tether.live.v2)
    byte 1   seed of the masks and of where fragmented messages are cut
    rest     at most 64 steps, each a kind byte (its low nibble) and its arguments; bytes
             past the end read as 0, kinds past 12 do nothing:
              0 COMMAND   op, id, a mask of FIELDS, then a palette byte per field (the
                          palettes hold right and wrong values); kind bit 4: sent in 3
                          fragments; bit 5: non-ASCII characters not escaped
              1 RAW       n, then n bytes as text (invalid UTF-8 replaced)
              2 TEXT      a prepared text (TEXTS: malformed JSON, non-objects, NaN, 1e400,
                          deep nesting, lone surrogates, ...)
              3 BINARY    n, then an n-byte binary frame
              4 BIG       shape, size: a command of an exact size around `max_command_size`
                          or past the app's `max_message_size` (a room name, info, data,
                          token or unknown field, or not JSON; of 1- to 4-byte characters)
              5 BULK      n - 1, mode: n joins in one burst (x16 when mode's high nibble is
                          0xF): of fresh rooms, one room, unknown rooms, history rooms
              6 FLOOD     n - 1, a command: n copies in one burst
              7 TICK      n: n/4 seconds pass
              8 SERVER    room, n: the server publishes into a room
              9 OBSERVER  action: the observer publishes, or asks presence or history
             10 CLOSE     code: the client closes
             11 PING      n: a WebSocket ping of n % 126 bytes
             12 BURST     n, then up to 8 (repeat, command): each repeated, all in one burst

The app runs on an event loop in this thread whose clock is virtual (`VirtualLoop`: time
moves only when a step says so; the live layer's token buckets read the same clock), so the
rate limit, the error budget, `connect_timeout`, the heartbeat and a token's expiry are exact.
Two clients talk to it over in-memory transports (`fuzz_http.FakeTransport`): the fuzzed one,
new for each input, and an observer that stays connected across inputs, joined to the rooms
`chat:lobby` (presence, client publishes) and `hist:log` (history), into which the server
publishes before every input. After each step the loop runs until idle and `Model` judges
what each client got:

- the fuzzed client: every message is a text frame of one JSON object (NaN, Infinity and
  numbers that overflow are not JSON); a push of a documented kind and shape; a reply with
  the command's id (null when it could not be read) holding `result` or `error`; an error's
  (code, name) in the doc's error table, with `limit` naming a setting of the Limits table
  when the error names a limit; and what the doc says of that command: which errors may
  answer it (the model computes the ones that apply and accepts any of them, not an order of
  checks), the result's shape, presence and positions, recovery, the rate limit exactly, the
  error budget exactly (close 4004 after the error that spends it), the close codes and when
  they come (4001-4005, 1009);
- the observer: every message published into its rooms, in order, once (a numbered room's
  offsets one by one), the presence of `chat:lobby` as the model has it after every step,
  replies to its own commands exactly right, never an error, a `lost` or a close;
- the server: nothing logged at ERROR but by the app's own failing hooks (`HookBug`, which
  the doc answers with 500 internal), nothing reported to the loop, and once the fuzzed
  connection ended, nothing of it left (task, server connection, hub membership, presence).

The reader mode (byte 0 & 3 == 3) runs `read_command` alone on the rest as text (byte 1: bit
1 the small profile's settings; bit 2 the text 64 times, for depths past libFuzzer's max_len;
bit 0 the text wrapped as a field of a command, bits 3-7 which one, see WRAPS):
CommandError of a documented code with the doc's limit, or a Command whose fields the
accessors read or refuse as documented, and whose values the server can send back as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import pathlib
import random
import re
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from fuzz_http import FakeTransport  # fuzz/ is on sys.path: run.py and the tests put it there

from tether import App
from tether.live import Authenticated, LiveSettings, Refuse
from tether.live import commands as live_commands
from tether.live import limits as live_limits
from tether.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    PROTOCOL_ERROR,
    FrameParser,
    encode_frame,
)
from tether.protocol.connection import OPEN, Connection, Side
from tether.server.serve import ServerState

MAX_LEN = 4096  # libFuzzer's -max_len for this target
ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "live-protocol.md"
SUBPROTOCOL = "tether.live.v1"
SETTLE_TURNS = 2000  # loop turns a settle may take, plus some per message sent
EPS = 0.05  # seconds of slack around a timed close (the app's hooks read the wall clock)
QUANTUM = 0.5  # time passes in steps of this many ping intervals (the observer pongs between them)
ALLOWED_ERROR_LOGS = ("a hook failed", "authenticate raised")  # the app's HookBug, logged as the doc says


# -- the doc's tables ---------------------------------------------------------------------------
def _table(section: str) -> list[list[str]]:
    """The rows of the first table under `## section` in the protocol doc (cells as text)."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    rows = []
    for line in text[start:end if end != -1 else len(text)].splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # the header row off


def doc_tables() -> tuple[set[tuple[int, str]], set[int], set[str]]:
    """(error (code, name) pairs, close codes, settings) as docs/live-protocol.md lists them."""
    errors = set()
    for row in _table("Error codes (in replies)"):
        for name in re.findall(r"`(\w+)`", row[1]):
            errors.add((int(row[0]), name))
    closes = {int(row[0]) for row in _table("Close codes")}
    settings = {re.findall(r"`(\w+)`", row[0])[0] for row in _table("Limits")}
    return errors, closes, settings


DOC_ERRORS, DOC_CLOSES, DOC_SETTINGS = doc_tables()
#: How deep a command's JSON may nest (the doc, under Limits: "may nest 32 levels deep at most").
MAX_DEPTH = int(re.findall(r"may nest (\d+) levels deep", DOC.read_text(encoding="utf-8"))[0])
ERROR_CODES = {name: code for code, name in DOC_ERRORS}
LIMIT_ERRORS = {"too_large", "rate_limited", "too_many_rooms"}  # the errors that name a limit
PUSH_KINDS = {"message", "presence", "lost", "ping"}
#: What the fuzzed client got so far in this process ("error:NAME", "close:CODE", "push:KIND",
#: "recovered", "not recovered"): tests/test_fuzz_targets.py checks the seeds reach every one.
SEEN: set[str] = set()


# -- the app under fuzz ---------------------------------------------------------------------------
class Profile:
    """An app's settings: the live endpoint's, and the app's max_message_size."""

    def __init__(self, name: str, live: dict[str, Any], max_message_size: int = 1 << 20) -> None:
        self.name, self.live, self.max_message_size = name, live, max_message_size

    @property
    def settings(self) -> LiveSettings:
        return LiveSettings(**self.live)


PROFILES = (
    Profile("default", {}),
    Profile("small", {"max_command_size": 600, "commands_per_second": 5.0, "command_burst": 12, "max_rooms": 4,
                      "max_info_size": 64, "max_room_length": 24, "max_errors": 6, "connect_timeout": 2.0,
                      "ping_interval": 4.0}, max_message_size=2048),
    Profile("bulk", {"commands_per_second": 1000.0, "command_burst": 10_000, "max_errors": 10_000}),
)
HISTORY_SIZE = 5  # of every hist:{name} room


class HookBug(Exception):
    """What the app's hooks raise on purpose: the doc answers it with 500 (401 for authenticate)."""


def authenticate(token: Any, websocket: Any) -> Any:
    """Tokens: absent/null anonymous, "admin", "user:<name>", "short" (expires in 3 s),
    "expired", "boom" (the hook fails); anything else is refused."""
    if token is None:
        return None
    if token == "admin" or token.startswith("user:"):
        return token
    if token == "short":
        return Authenticated("short", time.time() + 3.0)
    if token == "expired":
        return Authenticated("expired", time.time() - 1.0)
    if token == "boom":
        raise HookBug("authenticate")
    raise Refuse("bad token")


def build_app(profile: Profile) -> App:
    """Rooms: chat:{name} (presence, client publishes checked by a hook), hist:{name} (history
    of HISTORY_SIZE, client publishes, no presence), quiet:{name} (nothing), vip:{name} (a
    join hook: admins only, info set by the hook), boom:{name} (a join hook that fails)."""
    app = App(max_message_size=profile.max_message_size, ping_interval=0, loop_lag_warning=0)
    live = app.live("/live", **profile.live)
    live.authenticate(authenticate)
    live.room("chat:{name}", client_publish=True)
    live.room("hist:{name}", history=HISTORY_SIZE, presence=False, client_publish=True)
    live.room("quiet:{name}", presence=False)

    @live.room("vip:{name}")
    def vip(conn: Any, name: str) -> Any:
        if conn.identity != "admin":
            raise Refuse("admins only")
        return {"vip": name}

    @live.room("boom:{name}")
    def boom(conn: Any, name: str) -> Any:
        raise HookBug("join hook")

    @live.on_publish("chat:{name}")
    def check_publish(conn: Any, name: str, data: Any) -> Any:
        if isinstance(data, str) and data == "refuse-me":
            raise Refuse("not that")
        if isinstance(data, str) and data == "boom-me":
            raise HookBug("publish hook")
        return data

    return app


class Room:
    """What the model knows of a room name: its declaration (None: no pattern matches)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str | None) -> None:
        self.kind = kind  # chat, hist, quiet, vip, boom

    @property
    def presence(self) -> bool:
        return self.kind in ("chat", "vip", "boom")

    @property
    def history(self) -> bool:
        return self.kind == "hist"

    @property
    def client_publish(self) -> bool:
        return self.kind in ("chat", "hist")


def declared(name: str) -> Room:
    for kind in ("chat", "hist", "quiet", "vip", "boom"):
        if name.startswith(kind + ":") and len(name) > len(kind) + 1:
            return Room(kind)
    return Room(None)


# -- a virtual clock ------------------------------------------------------------------------------
class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when `advance` says: timers (connect_timeout, the
    heartbeat, expiry) fire when the program lets time pass, never because the machine is slow."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class _Clock(types.SimpleNamespace):
    """Stands for the `time` module in tether.live.limits: its monotonic() is the loop's."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Bucket:
    """The doc's token bucket (size, refilled at `rate` a second), as an interval of what the
    server's may hold: exact until an outcome leaves a command's counting open."""

    def __init__(self, size: float, rate: float, now: float) -> None:
        self.size, self.rate = float(size), rate
        self.lo = self.hi = float(size)
        self.at = now

    def refill(self, now: float) -> None:
        self.lo = min(self.size, self.lo + (now - self.at) * self.rate)
        self.hi = min(self.size, self.hi + (now - self.at) * self.rate)
        self.at = now

    def took(self, taken: bool | None) -> None:
        """A command was counted (True), refused for want of a token (False), or either (None)."""
        if taken is None:
            self.lo = max(0.0, self.lo - 1)
        elif taken:
            self.lo, self.hi = max(self.lo, 1.0) - 1, self.hi - 1
        else:
            self.hi = min(self.hi, math.nextafter(1.0, 0.0))


# -- JSON as the doc means it ---------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows")
    return value


def strict_loads(text: str) -> Any:
    """JSON as RFC 8259 has it (and as a browser's JSON.parse reads it): no NaN, no Infinity."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON in UTF-8 (the doc's measure of presence info)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def as_text(obj: Any, ascii_only: bool = True) -> str:
    """A command as the client sends it (escaped when it holds what UTF-8 cannot)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only)
    return text if not _has_surrogate(text) else json.dumps(obj, separators=(",", ":"))


# -- palettes ---------------------------------------------------------------------------------------
class Sym:
    """A value resolved when the command is sent (sizes from the profile, positions learned)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ABSENT = Sym("absent")
FRESH_ID = Sym("fresh id")
OPS: list[Any] = ["connect", "join", "leave", "publish", "presence", "history", "refresh", "pong",
                  "nope", "", "JOIN", "join ", 7, None, ABSENT, ["join"]]
IDS: list[Any] = [ABSENT, FRESH_ID, FRESH_ID, FRESH_ID, None, "7", True, 1.5, -3, 10**30, 0, [1], 2**63, 1e400]
ROOMS: list[Any] = ["chat:lobby", "hist:log", "chat:a", "chat:b", "hist:a", "quiet:q", "vip:v", "boom:b", "nowhere",
                    "", "chat:", 5, None, [], {"r": 1}, True, Sym("room at limit"), Sym("room over limit"),
                    Sym("room far over"), "chat:\ud800", "chat:\u00e9\u20ac\U0001f600", "chat:\x00", "chat:{name}",
                    "hist:log ", "CHAT:lobby", ABSENT, Sym("room multibyte at limit")]
INFOS: list[Any] = [ABSENT, {"name": "fuzz"}, "x", 1, [1, 2], None, Sym("info at limit"), Sym("info over limit"),
                    Sym("info multibyte at limit"), Sym("info far over"), float("nan"), float("inf"), "\ud800",
                    {"\udfff": 1}, 10**400, Sym("deep 50"), Sym("deep 600"), True, -0.0]
SINCES: list[Any] = [ABSENT, Sym("since now"), Sym("since now-2"), Sym("since 0"), Sym("since future"),
                     Sym("since other epoch"), Sym("since negative"), {"epoch": 1, "offset": 0}, "x",
                     Sym("since bool"), Sym("since float"), Sym("since no offset"), Sym("since huge"), None]
DATAS: list[Any] = [ABSENT, {"text": "hi"}, "refuse-me", "boom-me", None, 1, [1, "a"], float("nan"), float("-inf"),
                    "\ud800", Sym("deep 50"), Sym("deep 600"), 10**400, "\u00e9\U0001f600", {"k": [True, False]},
                    1e308, Sym("big string")]
TOKENS: list[Any] = [ABSENT, None, "user:fuzz", "admin", "short", "expired", "bad", "boom", 123, [], {"t": 1},
                     True, "", "user:\ud800"]
OFFSETS: list[Any] = [ABSENT, 0, 1, 3, 100, -1, 1.5, "2", True, 2**70, None]
EXTRAS: list[Any] = [ABSENT, 1, "zzz", {"nested": [1]}, float("nan")]
FIELDS = ("room", "info", "since", "data", "token", "since_offset", "limit", "extra")
PALETTES = {"room": ROOMS, "info": INFOS, "since": SINCES, "data": DATAS, "token": TOKENS,
            "since_offset": OFFSETS, "limit": OFFSETS, "extra": EXTRAS}

# Prepared texts: what no palette makes.
TEXTS: list[str] = [
    "", " ", "{", "}", "[]", "[1,2]", '"connect"', "1", "-0", "null", "true", "{}", '{"op":"join"', "{'op':'join'}",
    '{"op":"pong"}',
    '{"op":"pong","id":4}',
    '{"op":"nope","id":5}',
    '{"op":5,"id":6}',
    '{"id":"x","op":"join"}',
    '{"op":"join","op":"leave","room":"chat:a","id":8}',  # the last op wins, as in any JSON reader
    '\ufeff{"op":"presence","room":"chat:a","id":9}',  # a byte order mark: not JSON
    '{"op":"presence","room":"chat:a","id":10} trailing',
    '{"op":"join","room":"chat:a","info":NaN,"id":11}',  # NaN, Infinity: Python's json reads them
    '{"op":"join","room":"chat:a","info":1e400,"id":12}',  # valid JSON, a float infinity in Python
    '{"op":"publish","room":"chat:lobby","data":Infinity}',
    '{"op":"publish","room":"hist:log","data":-Infinity,"id":13}',
    '{"op":"join","room":"chat:a","id":1' + "0" * 5000 + "}",  # past Python's 4300 digits
    '{"op":"join","room":"chat:a","id":1e2}',
    "[" * 60_000,  # deeper than any Python's json reader goes (3.13's goes past 5,000), within 64 KiB
    '{"op":"join","room":"chat:a","info":' + "[" * 30_000 + "]" * 30_000 + "}",
    '{"op":"publish","room":"chat:lobby","data":' + "[" * 900 + "]" * 900 + ',"id":14}',
    '{"op":"join","room":"\\ud800x","id":15}',  # lone surrogates, escaped (UTF-8 cannot carry them)
    '{"op":"join","room":"chat:lobby","info":"\\udc00","id":16}',
    '{"op":"publish","room":"chat:lobby","data":"\\udfff","id":17}',
    '{"op":"connect","token":"user:again","id":18}',
    '{"op":"leave","room":"chat:lobby","id":19}',
    '{"op":"history","room":"hist:log","since":0,"limit":2,"id":20}',
    '{"op":"refresh","token":"short","id":21}',
    '{"op":"refresh","token":"expired","id":22}',
    '{"op":"presence","room":"quiet:q","id":23}',
    '{"\\u006fp":"join","room":"chat:esc","id":24}',  # "op" escaped
    '{"op":"join","room":"chat:lobby","info":{"name":"fuzz"},"id":25}',
    '{"op":"join","room":"hist:log","id":26}',
]

STEP_COMMAND, STEP_RAW, STEP_TEXT, STEP_BINARY, STEP_BIG, STEP_BULK, STEP_FLOOD, STEP_TICK, STEP_SERVER, \
    STEP_OBSERVER, STEP_CLOSE, STEP_PING, STEP_BURST = range(13)
CLOSE_CODES = (1000, 1001, 4000, 3000, 1008)
SERVER_ROOMS = ("chat:lobby", "hist:log", "chat:a", "hist:a")
BIG_PADS = ("x", "\u00e9", "\u20ac", "\U0001f600")


class Program:
    """Reads an input's steps; past the end every byte reads as 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __bool__(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def pick(self, palette: list[Any]) -> Any:
        return palette[self.byte() % len(palette)]

    def command(self) -> dict[str, Any]:
        """op, id, a field mask, then one palette byte per field the mask names (FIELDS order)."""
        spec: dict[str, Any] = {"op": self.pick(OPS), "id": self.pick(IDS)}
        mask = self.byte()
        for bit, name in enumerate(FIELDS):
            if mask & (1 << bit):
                spec[name] = self.pick(PALETTES[name])
        return spec


# -- a client over an in-memory transport ---------------------------------------------------------
class Client:
    """One WebSocket client of the app: masks what it sends, parses what comes back, answers
    pings and close frames as a client does; `take()` hands over the messages received."""

    def __init__(self, harness: Harness, subprotocols: list[str], rng: random.Random) -> None:
        self.harness = harness
        self.rng = rng
        self.transport = FakeTransport(harness.loop, reads=True)
        self.server = harness.state.new_connection()
        self.transport.set_protocol(self.server)
        self.server.connection_made(self.transport)
        self.ws = Connection(Side.CLIENT, FrameParser(max_message_size=sys.maxsize, require_mask=False,
                                                      reject_mask=True))
        self.read = 0
        self.head: bytes | None = None
        self.subprotocol: str | None = None
        self.messages: list[str] = []
        self.close: tuple[int, str] | None = None  # the server's close frame (or 1006)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        lines = ["GET /live HTTP/1.1", "Host: fuzz", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
        self.transport.feed(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    @property
    def open(self) -> bool:
        return self.ws.state is OPEN and self.close is None and not self.transport.closing

    def mask(self) -> bytes:
        return self.rng.randbytes(4)

    def send_frames(self, frames: list[bytes]) -> None:
        if self.open:
            self.transport.feed(b"".join(frames))

    def text_frames(self, text: str, fragments: int = 1) -> list[bytes]:
        payload = text.encode("utf-8")
        if fragments <= 1 or len(payload) < 2:
            return [encode_frame(OP_TEXT, payload, mask=self.mask())]
        cuts = sorted(self.rng.randint(0, len(payload)) for _ in range(fragments - 1))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        return [encode_frame(OP_CONTINUATION if i else OP_TEXT, part, fin=i == len(parts) - 1, mask=self.mask())
                for i, part in enumerate(parts)]

    def send_text(self, text: str, fragments: int = 1) -> None:
        self.send_frames(self.text_frames(text, fragments))

    def send_binary(self, payload: bytes) -> None:
        self.send_frames([encode_frame(OP_BINARY, payload, mask=self.mask())])

    def send_close(self, code: int) -> None:
        if self.open:
            frame = self.ws.close(code, "bye")
            if frame is not None:
                self.transport.feed(frame)

    def send_ping(self, payload: bytes) -> None:
        if self.open:
            self.transport.feed(encode_frame(OP_PING, payload, mask=self.mask()))

    def pump(self) -> None:
        """Read what the server wrote since the last pump."""
        out = bytes(self.transport.written[self.read:])
        self.read += len(out)
        if self.head is None:
            if b"\r\n\r\n" not in out:
                assert not self.transport.lost, f"the server ended the handshake without a response: {out[:80]!r}"
                self.read -= len(out)
                return
            head, _, out = out.partition(b"\r\n\r\n")
            self.head = head
            status = head.split(b"\r\n", 1)[0]
            assert status.startswith(b"HTTP/1.1 101 "), f"the live endpoint refused the upgrade: {status!r}"
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-protocol":
                    self.subprotocol = value.strip().decode("latin-1")
            self.ws.accept()
        if out:
            for kind, value in self.ws.receive_data(out):
                if kind == OP_TEXT:
                    assert self.close is None, f"a message after the close frame: {value[:80]!r}"
                    self.messages.append(value)
                elif kind == OP_BINARY:
                    raise AssertionError(f"the server sent a binary message ({len(value)} bytes): the live "
                                         "protocol is text only")
                elif kind == OP_PING:
                    frame = self.ws.pong(value)
                    if frame is not None and not self.transport.closing:
                        self.transport.feed(frame)
                elif kind == OP_CLOSE:
                    self.close = value
                    frame = self.ws.close_received(*value)
                    if frame is not None and not self.transport.closing:
                        self.transport.feed(frame)
                elif kind == PROTOCOL_ERROR:
                    raise AssertionError(f"the server broke RFC 6455: {value.code} {value.reason}")
        if self.transport.lost and self.close is None:
            self.close = (1006, "connection lost")
            self.ws.connection_lost()

    def take(self) -> list[str]:
        self.pump()
        messages, self.messages = self.messages, []
        return messages


def parse_message(text: str, who: str) -> dict[str, Any]:
    """A server message as the doc shapes it: one JSON object, a push or a reply."""
    try:
        message = strict_loads(text)
    except (ValueError, RecursionError) as exc:
        raise AssertionError(f"{who} got a message that is not JSON ({exc}): {text[:200]!r}") from None
    assert isinstance(message, dict), f"{who} got a message that is not an object: {text[:200]!r}"
    if "push" in message:
        kind = message["push"]
        assert kind in PUSH_KINDS and "id" not in message, f"{who} got an undocumented push: {text[:200]!r}"
        if kind == "message":
            assert isinstance(message.get("room"), str) and "data" in message, f"{who}: bad message push {text[:200]!r}"
            if "offset" in message or "epoch" in message:
                assert type(message.get("offset")) is int and isinstance(message.get("epoch"), str), \
                    f"{who}: bad numbered message {text[:200]!r}"
        elif kind == "presence":
            assert isinstance(message.get("room"), str) and isinstance(message.get("joined"), dict) \
                and isinstance(message.get("left"), dict), f"{who}: bad presence push {text[:200]!r}"
        elif kind == "lost":
            raise AssertionError(f"{who} was told messages were lost, on one node with no backplane: {text[:200]!r}")
        return message
    assert "id" in message and (("result" in message) != ("error" in message)), \
        f"{who} got a message that is neither a push nor a reply: {text[:200]!r}"
    command_id = message["id"]
    assert command_id is None or type(command_id) is int, f"{who}: a reply's id is {command_id!r}"
    if "error" in message:
        error = message["error"]
        assert isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("name"), str) \
            and isinstance(error.get("message"), str), f"{who}: bad error reply {text[:200]!r}"
        assert (error["code"], error["name"]) in DOC_ERRORS, \
            f"{who} got an undocumented error {error['code']} {error['name']}: {text[:200]!r}"
        if "limit" in error:
            assert error["limit"] in DOC_SETTINGS, f"{who}: error names the undocumented limit {error['limit']!r}"
        if error["name"] in LIMIT_ERRORS:
            assert "limit" in error, f"{who}: a {error['name']} error without its limit: {text[:200]!r}"
    else:
        assert isinstance(message["result"], dict), f"{who}: a result that is not an object: {text[:200]!r}"
    return message


# -- what the doc says of one command ------------------------------------------------------------------
class Spec:
    """The answers a command may get: an error from `must` when it is not empty (or from
    `optional`), else a result (checked by `on_result`) or an error from `optional`."""

    def __init__(self, silent: bool = False, counted: bool | None = True, id: int | None = None,
                 ids: set[Any] | None = None) -> None:
        self.must: dict[str, set[str | None]] = {}  # error name -> the limits it may name
        self.optional: dict[str, set[str | None]] = {}
        self.ids: set[Any] = ids if ids is not None else {None}  # what an error's id may be
        self.id = id
        self.silent = silent  # never answered (pong)
        self.counted = counted  # spends a command token (None: depends on the answer)
        self.on_result: Callable[[dict[str, Any] | None], None] | None = None
        self.closes: set[int] = set()  # the connection must then close with one of these

    def also(self, errors: dict[str, str | None], optional: bool = False) -> None:
        target = self.optional if optional else self.must
        for name, limit in errors.items():
            target.setdefault(name, set()).add(limit)

    def allowed(self) -> dict[str, set[str | None]]:
        """Every error this command may be answered with, and the limits each may name."""
        allowed = {name: set(limits) for name, limits in self.must.items()}
        for name, limits in self.optional.items():
            allowed.setdefault(name, set()).update(limits)
        return allowed


class Sent:
    """A message the fuzzed client sent: text, binary, or big (over the app's max_message_size)."""

    def __init__(self, text: str, kind: str = "text") -> None:
        self.text, self.kind = text, kind


def read_spec(text: str, settings: LiveSettings) -> tuple[Spec, dict[str, Any] | None]:
    """What the doc says of reading `text`, and the command (None when it cannot be read):
    413 over `max_command_size`; 400 for what is not JSON (NaN, infinities and numbers too
    large for a double are not), holds a lone surrogate escape, nests deeper than MAX_DEPTH,
    is not an object, or whose id is not an integer (all with id null), or whose op is not a
    string (with its id, or null)."""
    spec = Spec(counted=False)
    size = len(text.encode("utf-8"))
    if size > settings.max_command_size:
        spec.also({"too_large": "max_command_size"})
        return spec, None
    try:
        message = strict_loads(text)
    except (ValueError, RecursionError):
        spec.also({"bad_request": None})
        return spec, None
    if depth(message) > MAX_DEPTH or _holds_surrogate(message) or not isinstance(message, dict):
        spec.also({"bad_request": None})
        return spec, None
    command_id = message.get("id")
    if command_id is not None and type(command_id) is not int:
        spec.also({"bad_request": None})
        return spec, None
    spec.id = command_id
    spec.ids = {None, command_id}
    if not isinstance(message.get("op"), str):
        spec.also({"bad_request": None})
        return spec, None
    spec.counted = True
    return spec, message


def depth(value: Any) -> int:
    """How deep `value` nests objects and arrays (a scalar 0, `[]` 1)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _holds_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _has_surrogate(value)
    if isinstance(value, list):
        return any(_holds_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_surrogate(key) or _holds_surrogate(item) for key, item in value.items())
    return False


class Model:
    """The fuzzed connection as the doc has it: phase, identity, expiry, rooms, buckets."""

    def __init__(self, harness: Harness, opened_at: float) -> None:
        self.harness = harness
        self.settings = harness.settings
        self.phase = "waiting"  # waiting (for connect), connected, closing, closed
        self.opened_at = opened_at
        self.heard = opened_at
        self.identity: Any = None
        self.expires_at: float | None = None
        self.rooms: dict[str, Room] = {}
        self.commands = Bucket(self.settings.command_burst, self.settings.commands_per_second, opened_at)
        self.errors = Bucket(self.settings.max_errors, 1.0, opened_at)
        self.closes: set[int] = set()  # acceptable close codes once a close is due
        self.may_close: set[int] = set()  # closes allowed (not required) now

    # -- one text message ---------------------------------------------------------------------
    def expect(self, text: str, now: float) -> Spec:
        """What the doc allows as the answer to `text`, sent now."""
        self.heard = now
        spec, command = read_spec(text, self.settings)
        if self.phase == "waiting":
            return self.expect_first(spec, command)
        self.commands.refill(now)
        self.errors.refill(now)
        if command is None:
            return spec
        op = command["op"]
        if op == "pong":
            return Spec(silent=True, counted=False, id=spec.id, ids=spec.ids)
        handler = getattr(self, "op_" + op, None) if op in OPS_KNOWN else None
        if handler is None:
            spec.also({"unknown_op": None})
            return spec
        handler(command, spec)
        return spec

    def expect_first(self, spec: Spec, command: dict[str, Any] | None) -> Spec:
        """The first message must be connect: else close 4002 (an error reply may come first)."""
        spec.counted = False
        if command is None or command["op"] != "connect":
            errors = spec.must if command is None else {"bad_request": {None}, "unknown_op": {None}}
            spec.must = {}
            spec.optional.update(errors)
            spec.on_result = self.no_result
            spec.closes = {4002}
            return spec
        token = command.get("token")
        if token is not None and not isinstance(token, str):
            spec.must = {"bad_request": {None}, "unauthorized": {None}}
            spec.closes = {4001, 4002}
            return spec
        outcome = token_outcome(token)
        if outcome == "refused":
            spec.must = {"unauthorized": {None}}
            spec.closes = {4001}
            return spec
        if outcome == "expired":  # the doc: 401 `token expired`, then 4003
            spec.must = {"unauthorized": {None}}
            spec.closes = {4003}
            return spec

        def connected(result: dict[str, Any] | None) -> None:
            if result is not None:
                assert isinstance(result.get("client"), str) and result["client"] == self.harness.fuzz_id, \
                    f"connect: client {result.get('client')!r}, the connection is {self.harness.fuzz_id!r}"
                assert result.get("ping") == self.settings.ping_interval, f"connect: ping {result.get('ping')!r}"
                check_expires_in(result, token)
            self.phase = "connected"
            self.identity = token
            self.expires_at = self.harness.loop.now + 3.0 if token == "short" else None
        spec.on_result = connected
        return spec

    def no_result(self, result: dict[str, Any] | None) -> None:
        if result is not None:
            raise AssertionError(f"a first command that is not connect was answered with a result: {result!r}")

    # -- the ops --------------------------------------------------------------------------------
    def room_of(self, command: dict[str, Any], spec: Spec) -> str | None:
        room = command.get("room")
        if not isinstance(room, str) or not room:
            spec.also({"bad_request": None})
            return None
        if len(room) > self.settings.max_room_length:
            spec.also({"too_large": "max_room_length"})
            return None
        return room

    def joined_of(self, room: str | None, spec: Spec) -> Any:
        """The declaration of `room` if this connection joined it; else None, and the doc's
        answer is not_joined (nothing more when the room name itself was refused)."""
        if room is None:
            return None
        decl = self.rooms.get(room)
        if decl is None:
            spec.also({"not_joined": None})
        return decl

    def op_connect(self, command: dict[str, Any], spec: Spec) -> None:
        spec.also({"already_connected": None})

    def op_join(self, command: dict[str, Any], spec: Spec) -> None:
        room = self.room_of(command, spec)
        decl = declared(room) if room is not None else Room(None)
        info = command.get("info")
        if info is not None and json_size(info) > self.settings.max_info_size:
            spec.also({"too_large": "max_info_size"}, optional=room is not None and not decl.presence)
        since = command.get("since")
        if since is not None and not _since_ok(since):
            spec.also({"bad_request": None}, optional=room is not None and not decl.history)
        if room is None:
            return
        if room in self.rooms:
            spec.also({"already_joined": None})
        elif len(self.rooms) >= self.settings.max_rooms:
            spec.also({"too_many_rooms": "max_rooms"})
        if decl.kind is None:
            spec.also({"unknown_room": None})
        elif decl.kind == "vip" and self.identity != "admin":
            spec.also({"forbidden": None})
        elif decl.kind == "boom":
            spec.also({"internal": None})
        stored = {"vip": room[4:]} if decl.kind == "vip" else info
        harness = self.harness

        def joined(result: dict[str, Any] | None) -> None:
            harness.member_joined("fuzz", room, stored if decl.presence else None)
            self.rooms[room] = decl
            if result is not None:
                harness.check_join_result(room, decl, result, since if _since_ok(since) else None, "fuzz")
            elif decl.history and since is not None and _since_ok(since):
                harness.expect_replay("fuzz", room, since, None)
        spec.on_result = joined

    def op_leave(self, command: dict[str, Any], spec: Spec) -> None:
        room = self.room_of(command, spec)
        if room is None:
            return
        if room not in self.rooms:
            spec.also({"not_joined": None})

        def left(result: dict[str, Any] | None) -> None:
            assert result in (None, {}), f"leave: result {result!r}"
            del self.rooms[room]
            self.harness.member_left("fuzz", room)
        spec.on_result = left

    def op_publish(self, command: dict[str, Any], spec: Spec) -> None:
        room = self.room_of(command, spec)
        decl = self.joined_of(room, spec)
        if room is None or decl is None:
            return
        if not decl.client_publish:
            spec.also({"forbidden": None})
        if "data" not in command:
            spec.also({"bad_request": None})
            return
        data = command["data"]
        if decl.kind == "chat" and data == "refuse-me":
            spec.also({"forbidden": None})
        if decl.kind == "chat" and data == "boom-me":
            spec.also({"internal": None})

        def published(result: dict[str, Any] | None) -> None:
            assert result in (None, {}), f"publish: result {result!r}"
            self.harness.published(room, data)
        spec.on_result = published

    def op_presence(self, command: dict[str, Any], spec: Spec) -> None:
        room = self.room_of(command, spec)
        decl = self.joined_of(room, spec)
        if room is None or decl is None:
            return
        if not decl.presence:
            spec.also({"no_presence": None})

        def presence(result: dict[str, Any] | None) -> None:
            if result is not None:
                expected = self.harness.presence_of(room) if decl.presence else {}
                assert canonical(result) == canonical({"presence": expected}), \
                    f"presence of {room!r}: {result!r}, expected {expected!r}"
        spec.on_result = presence

    def op_history(self, command: dict[str, Any], spec: Spec) -> None:
        room = self.room_of(command, spec)
        for name in ("since", "limit"):
            value = command.get(name)
            if value is not None and (type(value) is not int or value < 0):
                spec.also({"bad_request": None}, optional=room is not None and room in self.rooms
                          and not self.rooms[room].history)
        decl = self.joined_of(room, spec)
        if room is None or decl is None:
            return
        if not decl.history:
            spec.also({"no_history": None})

        def history(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.harness.check_history(room, command.get("since"), command.get("limit"), result, "fuzz")
        spec.on_result = history

    def op_refresh(self, command: dict[str, Any], spec: Spec) -> None:
        token = command.get("token")
        if token is not None and not isinstance(token, str):
            spec.also({"bad_request": None})
            return
        if token_outcome(token) != "ok":
            spec.also({"unauthorized": None})
            return

        def refreshed(result: dict[str, Any] | None) -> None:
            if result is not None:
                assert set(result) == {"expires_in"}, f"refresh: result {result!r}"
                check_expires_in(result, token)
            self.identity = token
            self.expires_at = self.harness.loop.now + 3.0 if token == "short" else None
        spec.on_result = refreshed

    # -- time ---------------------------------------------------------------------------------------
    def timed_closes(self, now: float) -> tuple[set[int], set[int]]:
        """(closes due now, closes allowed now) by the clock: connect_timeout, expiry, heartbeat."""
        due: set[int] = set()
        allowed: set[int] = set()
        settings = self.settings
        if self.phase == "waiting":
            deadline = self.opened_at + settings.connect_timeout
            if now >= deadline - EPS:
                allowed.add(4002)
            if now >= deadline + EPS:
                due.add(4002)
        elif self.phase == "connected":
            if self.expires_at is not None:
                if now >= self.expires_at - EPS:
                    allowed.add(4003)
                if now >= self.expires_at + EPS:
                    due.add(4003)
            # The heartbeat looks every interval, each look up to a quantum late (`advance`):
            # silent for 2 intervals, a look closes the connection by 3 intervals and a quantum.
            interval = settings.ping_interval
            if now >= self.heard + 2 * interval - EPS:
                allowed.add(4005)
            if now >= self.heard + (3 + QUANTUM) * interval + EPS:
                due.add(4005)
        return due, allowed


OPS_KNOWN = {"connect", "join", "leave", "publish", "presence", "history", "refresh"}


def token_outcome(token: Any) -> str:
    """What `authenticate` makes of a token: ok, refused, expired."""
    if token is None or token in ("admin", "short") or (isinstance(token, str) and token.startswith("user:")):
        return "ok"
    if token == "expired":
        return "expired"
    return "refused"


def check_expires_in(result: dict[str, Any], token: Any) -> None:
    expires_in = result.get("expires_in", "missing")
    if token == "short":
        assert isinstance(expires_in, (int, float)) and abs(expires_in - 3.0) < 0.5, f"expires_in {expires_in!r}"
    else:
        assert expires_in is None, f"expires_in {expires_in!r} for a token without expiry"


def _since_ok(since: Any) -> bool:
    if since is None:
        return True
    return isinstance(since, dict) and isinstance(since.get("epoch"), str) and type(since.get("offset")) is int \
        and since["offset"] >= 0


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


# -- the harness --------------------------------------------------------------------------------------
class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Position:
    """A history room's position as the model knows it (None: not known yet)."""

    def __init__(self, epoch: str | None, offset: int | None) -> None:
        self.epoch, self.offset = epoch, offset

    def __repr__(self) -> str:
        return f"{self.epoch}/{self.offset}"


class Harness:
    """One App of a profile, its server on a virtual loop, and the observer: kept for every
    input of that profile, as a long-running server keeps its connections."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.settings = profile.settings
        self.loop = VirtualLoop()
        self.app = build_app(profile)
        self.state = ServerState(self.app, self.loop)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.log = _Log()
        self.clock = _Clock(self.loop)
        self.rng = random.Random(0)
        self.members: dict[str, dict[str, Any]] = {}  # room -> {client name: info}, as the model has it
        self.ids: dict[str, str] = {}  # client name -> connection id
        self.pending: dict[str, dict[str, list[tuple[Any, int | None]]]] = {"obs": {}, "fuzz": {}}
        # room -> (messages replayed before a join's reply, None when the join had no id to
        # say; the offset they follow)
        self.replays: dict[str, dict[str, tuple[int | None, int]]] = {"obs": {}, "fuzz": {}}
        self.positions: dict[str, Position] = {}
        self.kept: dict[tuple[str, str, int], str] = {}  # (room, epoch, offset) -> canonical data
        self.serial = 0
        self.fuzz: Client | None = None
        self.model: Model | None = None
        self.fuzz_id: str | None = None
        self.unjudged = ""  # what the fuzzed client sent past a due close (for the reports)
        self.next_id = 1
        self.obs_id = 1
        self.obs_view: dict[str, Any] = {}
        try:
            with self.active():
                self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start the app; connect the observer and join it to chat:lobby and hist:log."""
        self.loop.run_until_complete(self.app.startup())
        self.observer = self.open_client([SUBPROTOCOL])
        self.settle()
        self.observer.pump()
        self.observer_bucket = Bucket(self.settings.command_burst, self.settings.commands_per_second,
                                      self.loop.now)
        result = self.obs_command({"op": "connect", "token": "user:observer"})
        self.ids["obs"] = result["client"]
        self.members["chat:lobby"] = {}
        self.obs_command({"op": "join", "room": "chat:lobby", "info": {"name": "observer"}})
        self.member_joined("obs", "chat:lobby", {"name": "observer"})
        self.obs_view = {self.ids["obs"]: {"name": "observer"}}
        result = self.obs_command({"op": "join", "room": "hist:log"})
        self.member_joined("obs", "hist:log", None)
        position = result["position"]
        self.positions["hist:log"] = Position(position["epoch"] or None, position["offset"])
        self.baseline_tasks = set(asyncio.all_tasks(self.loop))

    # -- running ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """While the harness runs: the live layer's buckets on the virtual clock, ERRORs recorded."""
        saved = live_limits.time
        live_limits.time = self.clock  # type: ignore[assignment]
        root = logging.getLogger()
        root.addHandler(self.log)
        try:
            yield
        finally:
            live_limits.time = saved
            root.removeHandler(self.log)

    def close(self) -> None:
        """Drop the loop and whatever is still on it."""
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        with contextlib.suppress(BaseException):  # the input failed already: that is the report
            self.settle(check=False)
        self.loop.close()

    def settle(self, sent: int = 0, check: bool = True) -> None:
        """Run the loop until nothing is ready to run (timers wait for the virtual clock)."""
        self.loop.run_until_complete(self._settle(SETTLE_TURNS + 60 * sent))
        if check:
            self.check_errors()

    async def _settle(self, turns: int) -> None:
        ready = self.loop._ready  # type: ignore[attr-defined]  # asyncio's run queue: empty means idle
        for _ in range(turns):
            await asyncio.sleep(0)
            if not ready:
                return
        raise AssertionError(f"the server is still busy after {turns} loop turns")

    def check_errors(self) -> None:
        errors, self.loop_errors = self.loop_errors, []
        if errors:
            context = errors[0]
            exc = context.get("exception")
            raise AssertionError(f"reported to the loop: {context.get('message')}: {exc!r}") from exc
        records, self.log.records = self.log.records, []
        for record in records:
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, HookBug) and any(text in record.getMessage() for text in ALLOWED_ERROR_LOGS):
                continue
            raise AssertionError(f"logged at {record.levelname} by {record.name}: {record.getMessage()}"
                                 + (f" ({type(exc).__name__}: {exc})" if exc else "")) from exc

    def open_client(self, subprotocols: list[str]) -> Client:
        return Client(self, subprotocols, self.rng)

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, in steps of half a ping interval: the observer answers its
        pings between them, as a client does; the fuzzed client is judged after each."""
        quantum = self.settings.ping_interval * QUANTUM
        left = seconds
        while left > 1e-9:
            step = min(left, quantum)
            left -= step
            self.loop.now += step
            self.settle()
            self.after_step([])

    # -- the observer ----------------------------------------------------------------------------------
    def observer_ready(self) -> None:
        """Wait for a command token, as a polite client does."""
        self.observer_bucket.refill(self.loop.now)
        if self.observer_bucket.lo < 1:
            self.advance((1 - self.observer_bucket.lo) / self.settings.commands_per_second + 0.01)
            self.observer_bucket.refill(self.loop.now)

    def obs_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """The observer's command, answered exactly right."""
        return self.obs_commands([command])[0]

    def obs_commands(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The observer's commands in one burst, each answered exactly right, in order."""
        texts = []
        for command in commands:
            self.observer_ready()
            self.observer_bucket.took(True)
            texts.append(as_text({**command, "id": self.obs_id + len(texts)}))
        first = self.obs_id
        self.obs_id += len(texts)
        self.observer.send_frames([frame for text in texts for frame in self.observer.text_frames(text)])
        self.settle(len(texts))
        replies = self.observer_messages()
        assert [reply["id"] for reply in replies] == list(range(first, self.obs_id)), \
            f"the observer's {[c['op'] for c in commands]} were answered {replies!r}"
        for reply, command in zip(replies, commands, strict=True):
            assert "result" in reply, f"the observer's {command['op']} was answered {reply!r}"
        return [reply["result"] for reply in replies]

    def observer_messages(self) -> list[dict[str, Any]]:
        """The observer's messages: pushes checked and answered (pong), replies returned."""
        observer = self.observer
        replies = []
        pushes = []
        for text in observer.take():
            message = parse_message(text, "the observer")
            if "push" in message:
                pushes.append(message)
            else:
                assert "error" not in message, f"the observer got an error: {text[:300]!r}"
                replies.append(message)
        assert observer.close is None, f"the observer's connection was closed: {observer.close!r}"
        pings = 0
        for message in pushes:
            if message["push"] == "ping":
                pings += 1
            elif message["push"] == "presence":
                assert message["room"] == "chat:lobby", f"the observer got presence of {message['room']!r}"
                for member in message["left"]:
                    self.obs_view.pop(member, None)
                self.obs_view.update(message["joined"])
        self.check_deliveries("obs", pushes)
        for _ in range(pings):
            observer.send_text('{"op":"pong"}')
        if pings:
            self.settle(pings)
            assert not observer.take(), "the observer's pong was answered"
        return replies

    # -- rooms -----------------------------------------------------------------------------------------
    def member_joined(self, who: str, room: str, info: Any) -> None:
        self.members.setdefault(room, {})[who] = info

    def member_left(self, who: str, room: str) -> None:
        members = self.members.get(room)
        if members is not None:
            members.pop(who, None)

    def presence_of(self, room: str) -> dict[str, Any]:
        return {self.ids[who]: info for who, info in self.members.get(room, {}).items() if who in self.ids}

    def published(self, room: str, data: Any) -> None:
        """A publish into `room` succeeded: every member must get `data`, once, in order."""
        offset = None
        if declared(room).history:
            position = self.positions.setdefault(room, Position(None, None))
            if position.offset is not None and position.epoch is not None:
                position.offset += 1
                offset = position.offset
                self.kept[(room, position.epoch, offset)] = canonical(data)
            else:
                position.epoch = position.offset = None  # learned from the next sight of it
        for who in self.members.get(room, {}):
            self.pending[who].setdefault(room, []).append((data, offset))

    def check_deliveries(self, who: str, pushes: list[dict[str, Any]]) -> None:
        """`who`'s message pushes against what was published into its rooms (and replayed)."""
        got: dict[str, list[dict[str, Any]]] = {}
        for message in pushes:
            if message["push"] == "message":
                got.setdefault(message["room"], []).append(message)
        pending = self.pending[who]
        replays = self.replays[who]
        for room in set(got) | set(pending):
            messages = got.get(room, [])
            replayed, after = replays.pop(room, (0, 0))
            expected = pending.pop(room, [])
            if replayed is None:  # a join from a position without an id: all or nothing, unsaid
                replayed = max(0, len(messages) - len(expected))
            if replayed:
                assert len(messages) >= replayed, f"{who}: {len(messages)} messages of {room!r}, {replayed} replayed"
                offsets = [message.get("offset") for message in messages[:replayed]]
                assert offsets == list(range(after + 1, after + 1 + replayed)), \
                    f"{who}: a join of {room!r} from offset {after} replayed the offsets {offsets}"
                for message in messages[:replayed]:
                    self.check_numbered(room, message, who, replay=True)
                messages = messages[replayed:]
            assert (room in self.members and who in self.members[room]) or not messages or expected, \
                f"{who} got a message of {room!r}, which it is not in: {messages[0]!r}"
            if len(messages) != len(expected):
                raise AssertionError(
                    (f"a command ran after a due close{self.unjudged}: " if self.unjudged else "")
                    + f"{who} got {len(messages)} messages of {room!r}, {len(expected)} were published: "
                    f"{[m.get('data') for m in messages][:5]!r} against {[d for d, _ in expected][:5]!r}")
            for message, (data, offset) in zip(messages, expected, strict=True):
                assert canonical(message["data"]) == canonical(data), \
                    f"{who} got {message['data']!r} in {room!r}, {data!r} was published"
                if declared(room).history:
                    self.check_numbered(room, message, who, offset=offset)
                else:
                    assert "offset" not in message and "epoch" not in message, f"{who}: numbered {message!r}"

    def check_numbered(self, room: str, message: dict[str, Any], who: str, offset: int | None = None,
                       replay: bool = False) -> None:
        assert type(message.get("offset")) is int and isinstance(message.get("epoch"), str), \
            f"{who}: a message of the history room {room!r} without its offset and epoch: {message!r}"
        position = self.positions.setdefault(room, Position(None, None))
        key = (room, message["epoch"], message["offset"])
        if key in self.kept:
            assert self.kept[key] == canonical(message["data"]), \
                f"{who}: offset {message['offset']} of {room!r} holds {message['data']!r}, it was {self.kept[key]}"
        if replay:
            return
        if offset is not None:
            assert message["offset"] == offset and message["epoch"] == position.epoch, \
                f"{who}: a message of {room!r} at {message['epoch']}/{message['offset']}, expected " \
                f"{position.epoch}/{offset}"
        else:
            position.epoch, position.offset = message["epoch"], message["offset"]
        self.kept[key] = canonical(message["data"])

    def learn(self, room: str, position: dict[str, Any]) -> None:
        """A room's position as a reply gives it: the same as the model's, once known."""
        assert isinstance(position, dict) and isinstance(position.get("epoch"), str) \
            and type(position.get("offset")) is int, f"a position {position!r}"
        known = self.positions.setdefault(room, Position(None, None))
        if known.epoch is not None and known.offset is not None and position["epoch"]:
            assert (position["epoch"], position["offset"]) == (known.epoch, known.offset), \
                f"{room!r} is at {position!r}, the model has {known.epoch}/{known.offset}"
        if position["epoch"]:
            known.epoch, known.offset = position["epoch"], position["offset"]

    def check_join_result(self, room: str, decl: Room, result: dict[str, Any], since: Any, who: str) -> None:
        assert isinstance(result.get("recovered"), bool), f"join: result {result!r}"
        assert ("presence" in result) == decl.presence, f"join {room!r}: presence in {result!r}"
        if decl.presence:
            expected = self.presence_of(room)
            assert canonical(result["presence"]) == canonical(expected), \
                f"join {room!r}: presence {result['presence']!r}, expected {expected!r}"
        if not decl.history:
            assert result.get("position", "missing") is None and not result["recovered"], f"join {room!r}: {result!r}"
            return
        position = result.get("position")
        known = self.positions.get(room)
        before = Position(known.epoch, known.offset) if known is not None else Position(None, None)
        self.learn(room, position)
        if since is None:
            assert not result["recovered"], f"join {room!r} without since: {result!r}"
            return
        self.expect_replay(who, room, since, result, before)

    def expect_replay(self, who: str, room: str, since: dict[str, Any], result: dict[str, Any] | None,
                      before: Position | None = None) -> None:
        """A join from `since`: every message after it before the reply (recovered), or none."""
        position = result["position"] if result is not None else None
        recovered = result["recovered"] if result is not None else None
        known = before if before is not None else self.positions.get(room, Position(None, None))
        if result is not None and known.epoch is not None and known.offset is not None:
            behind = known.offset - since["offset"]
            # From offset 0 the member has seen nothing: any epoch will do (the doc).
            if since["epoch"] != known.epoch and since["offset"] != 0:
                assert not recovered, f"join {room!r} from another epoch {since!r} recovered: {result!r}"
            elif 0 <= behind <= HISTORY_SIZE:
                assert recovered, f"join {room!r} from {since!r}, {behind} behind {known}: not recovered {result!r}"
            elif behind > HISTORY_SIZE:
                assert not recovered, f"join {room!r} from {since!r}, past the kept {HISTORY_SIZE}: {result!r}"
        if result is not None:
            SEEN.add("recovered" if recovered else "not recovered")
        if recovered:
            count = position["offset"] - since["offset"]
            assert count >= 0, f"join {room!r} from {since!r} recovered to {position!r}"
            self.replays[who][room] = (count, since["offset"])
        elif result is None:
            self.replays[who][room] = (None, since["offset"])

    def check_history(self, room: str, since: Any, limit: Any, result: dict[str, Any], who: str) -> None:
        assert set(result) == {"position", "messages"}, f"history {room!r}: {result!r}"
        self.learn(room, result["position"])
        messages = result["messages"]
        assert isinstance(messages, list), f"history {room!r}: {result!r}"
        current = result["position"]["offset"]
        first = max((since or 0) + 1, current - HISTORY_SIZE + 1, 1)
        count = max(0, current - first + 1)
        if limit is not None:
            count = min(count, limit)
        offsets = [message.get("offset") for message in messages]
        assert offsets == list(range(first, first + count)), \
            f"history {room!r} since={since!r} limit={limit!r} at {current}: offsets {offsets!r}"
        epoch = result["position"]["epoch"]
        for message in messages:
            assert set(message) == {"offset", "data"}, f"history {room!r}: {message!r}"
            key = (room, epoch, message["offset"])
            if key in self.kept:
                assert self.kept[key] == canonical(message["data"]), \
                    f"history {room!r} offset {message['offset']}: {message['data']!r}, kept {self.kept[key]}"

    # -- one input ---------------------------------------------------------------------------------------
    def run(self, data: bytes) -> None:
        config, seed, program = data[0], data[1], Program(data[2:])
        self.rng.seed(seed)
        self.next_id = 1
        self.before_input()
        offer = (["tether.live.v1"], [], ["chat", "tether.live.v1"], ["tether.live.v2"])[(config >> 4) & 3]
        self.fuzz = self.open_client(offer)
        self.settle()
        self.fuzz.pump()
        ids = set(self.app.hub.ids()) - {self.ids["obs"]}
        self.fuzz_id = next(iter(ids)) if ids else None
        self.ids.pop("fuzz", None)
        if self.fuzz_id is not None:
            self.ids["fuzz"] = self.fuzz_id
        self.model = Model(self, self.loop.now)
        self.unjudged = ""
        if SUBPROTOCOL not in offer:
            self.model.closes = {4002}
            self.after_step([])
        else:
            assert self.fuzz.subprotocol == SUBPROTOCOL, f"offered {offer}, selected {self.fuzz.subprotocol!r}"
        if config & 4:
            self.step_texts([as_text({"op": "connect", "token": "user:fuzz", "id": 0})])
        steps = 0
        while program and steps < 64:
            steps += 1
            self.step(program)
        self.end_input(close=bool(config & 8))

    def before_input(self) -> None:
        """The server publishes into the observer's rooms: it must get both. The observer's
        command tokens are refilled first (time passes before the fuzzed client comes)."""
        bucket = self.observer_bucket
        bucket.refill(self.loop.now)
        wanted = min(bucket.size, 10.0)
        if bucket.lo < wanted:
            self.advance((wanted - bucket.lo) / bucket.rate + 0.01)
        self.serial += 1
        self.server_publish(("chat:lobby", "hist:log"), {"server": self.serial})

    def server_publish(self, rooms: tuple[str, ...], data: Any) -> None:
        async def publish() -> None:
            for room in rooms:
                await self.app.hub.publish(room, data)
        task = self.loop.create_task(publish())
        self.settle(len(rooms))
        assert task.done() and task.exception() is None, f"hub.publish({rooms!r}) did not finish: {task!r}"
        for room in rooms:
            self.published(room, data)
        self.after_step([])

    def step(self, program: Program) -> None:
        kind = program.byte()
        low = kind & 0x0F
        fuzz = self.fuzz
        assert fuzz is not None
        if low == STEP_COMMAND:
            text = self.render(program.command(), ascii_only=not kind & 0x20)
            self.step_texts([text], fragments=3 if kind & 0x10 else 1)
        elif low == STEP_RAW:
            raw = program.take(program.byte())
            self.step_texts([raw.decode("utf-8", "replace")])
        elif low == STEP_TEXT:
            self.step_texts([program.pick(TEXTS)])
        elif low == STEP_BINARY:
            payload = program.take(program.byte())
            self.step_binary(payload)
        elif low == STEP_BIG:
            self.step_big(program.byte(), program.byte())
        elif low == STEP_BULK:
            count, mode = program.byte() + 1, program.byte()
            if mode & 0xF0 == 0xF0:  # thousands (rarely: each costs a burst of that many commands)
                count *= 16
            self.step_bulk(count, mode)
        elif low == STEP_FLOOD:
            count = program.byte() + 1
            spec = program.command()
            texts = []
            for _ in range(count):
                texts.append(self.render({**spec, "id": FRESH_ID}))
            self.step_texts(texts)
        elif low == STEP_BURST:
            texts = []
            for _ in range(program.byte() % 8 + 1):
                repeat = program.byte() % 32 + 1
                spec = program.command()
                texts += [self.render({**spec, "id": FRESH_ID}) for _ in range(repeat)]
            self.step_texts(texts)
        elif low == STEP_TICK:
            self.advance(program.byte() / 4)
        elif low == STEP_SERVER:
            room = SERVER_ROOMS[program.byte() % len(SERVER_ROOMS)]
            self.server_publish((room,), {"server": self.serial, "n": program.byte()})
        elif low == STEP_OBSERVER:
            self.observer_step(program.byte())
        elif low == STEP_CLOSE:
            code = CLOSE_CODES[program.byte() % len(CLOSE_CODES)]
            if fuzz.open:
                fuzz.send_close(code)
                self.model.closes = {code, 1000, 1005}  # type: ignore[union-attr]
                self.model.phase = "closing"  # type: ignore[union-attr]
                self.settle(1)
                self.after_step([])
        elif low == STEP_PING:
            fuzz.send_ping(program.take(program.byte() % 126))
            self.settle(1)
            self.after_step([])

    def observer_step(self, action: int) -> None:
        action %= 4
        self.observer_ready()
        if action == 0:
            self.serial += 1
            data = {"obs": self.serial}
            self.published("chat:lobby", data)  # the observer's message comes with the reply
            self.obs_command({"op": "publish", "room": "chat:lobby", "data": data})
        elif action == 1:
            result = self.obs_command({"op": "presence", "room": "chat:lobby"})
            assert canonical(result) == canonical({"presence": self.presence_of("chat:lobby")}), \
                f"the observer's presence of chat:lobby: {result!r}, expected {self.presence_of('chat:lobby')!r}"
        elif action == 2:
            position = self.positions["hist:log"]
            since = max(0, (position.offset or 0) - 3)
            result = self.obs_command({"op": "history", "room": "hist:log", "since": since})
            self.check_history("hist:log", since, None, result, "obs")
        else:
            self.serial += 1
            data = {"obs-log": self.serial}
            self.published("hist:log", data)
            self.obs_command({"op": "publish", "room": "hist:log", "data": data})
        self.after_step([])

    # -- sending -----------------------------------------------------------------------------------------
    def render(self, spec: dict[str, Any], ascii_only: bool = True) -> str:
        """A command from palette picks, with the symbols resolved for this profile and moment."""
        command: dict[str, Any] = {}
        op = spec["op"]
        if op is not ABSENT:
            command["op"] = op
        command_id = spec["id"]
        if command_id is FRESH_ID:
            command_id = self.next_id
            self.next_id += 1
        if command_id is not ABSENT:
            command["id"] = command_id
        room = spec.get("room", ABSENT)
        for name in FIELDS:
            if name not in spec:
                continue
            value = self.resolve(spec[name], room if isinstance(room, str) else "hist:log")
            if value is ABSENT:
                continue
            key = {"since_offset": "since", "extra": "zzz"}.get(name, name)
            if name == "since_offset" and "since" in command:
                continue
            command[key] = value
        return as_text(command, ascii_only)

    def resolve(self, value: Any, room: str) -> Any:
        if not isinstance(value, Sym):
            return value
        settings = self.settings
        name = value.name
        if name == "absent":
            return ABSENT
        if name == "room at limit":
            return "chat:" + "r" * (settings.max_room_length - 5)
        if name == "room over limit":
            return "chat:" + "r" * (settings.max_room_length - 4)
        if name == "room multibyte at limit":  # characters, not bytes: within the limit
            return "chat:" + "\u00e9" * (settings.max_room_length - 5)
        if name == "room far over":
            return "chat:" + "\u00e9" * min(10_000, settings.max_room_length * 40)
        if name == "info at limit":
            return "i" * (settings.max_info_size - 2)
        if name == "info over limit":
            return "i" * (settings.max_info_size - 1)
        if name == "info multibyte at limit":  # bytes, not characters: 2 bytes each, one over
            return "\u00e9" * ((settings.max_info_size - 1) // 2)
        if name == "info far over":
            return {"blob": "b" * min(settings.max_command_size - 100, settings.max_info_size * 30)}
        if name.startswith("deep "):
            return _deep(int(name[5:]))
        if name == "big string":
            return "s" * min(settings.max_command_size - 200, 20_000)
        position = self.positions.get(room) or Position(None, None)
        epoch = position.epoch or "unknown-epoch"
        offset = position.offset or 0
        return {
            "since now": {"epoch": epoch, "offset": offset},
            "since now-2": {"epoch": epoch, "offset": max(0, offset - 2)},
            "since 0": {"epoch": epoch, "offset": 0},
            "since future": {"epoch": epoch, "offset": offset + 5},
            "since other epoch": {"epoch": "not-" + epoch, "offset": offset},
            "since negative": {"epoch": epoch, "offset": -1},
            "since bool": {"epoch": epoch, "offset": True},
            "since float": {"epoch": epoch, "offset": 1.5},
            "since no offset": {"epoch": epoch},
            "since huge": {"epoch": epoch, "offset": 2**70},
        }[name]

    def step_texts(self, texts: list[str], fragments: int = 1) -> None:
        """Send text messages in one burst and judge what comes back."""
        fuzz, model = self.fuzz, self.model
        assert fuzz is not None and model is not None
        if not fuzz.open:
            return
        limit = self.profile.max_message_size
        frames: list[bytes] = []
        sent: list[Sent] = []
        for text in texts:
            size = len(text.encode("utf-8"))
            sent.append(Sent(text, "big" if size > limit else "text"))
            frames += fuzz.text_frames(text, fragments)
            if size > limit:
                break  # the connection ends there (1009)
        fuzz.send_frames(frames)
        self.settle(len(sent))
        self.after_step(sent)

    def step_binary(self, payload: bytes) -> None:
        fuzz = self.fuzz
        assert fuzz is not None
        if fuzz.open:
            fuzz.send_binary(payload)
            self.settle(1)
            self.after_step([Sent("", "binary")])

    def step_big(self, kind: int, size_class: int) -> None:
        """A command of an exact size around `max_command_size` (or past the app's
        `max_message_size`): a long room name, a big info, data, token or unknown field."""
        settings = self.settings
        limit = settings.max_command_size
        target = (limit - 1, limit, limit + 1, limit + 100, self.profile.max_message_size + 1)[size_class % 5]
        pad = BIG_PADS[(size_class >> 3) % len(BIG_PADS)]
        shapes = (('{"op":"join","room":"chat:', '","id":%d}'), ('{"op":"join","room":"chat:big","info":"',
                  '","id":%d}'), ('{"op":"publish","room":"chat:lobby","data":"', '","id":%d}'),
                  ('{"op":"refresh","token":"user:', '","id":%d}'), ('{"op":"presence","room":"chat:lobby","pad":"',
                                                                     '","id":%d}'), ("not json ", ""))
        head, tail = shapes[kind % len(shapes)]
        if "%d" in tail:
            tail = tail % self.next_id
            self.next_id += 1
        fixed = len(head.encode()) + len(tail.encode())
        room = max(0, target - fixed)
        width = len(pad.encode("utf-8"))
        text = head + pad * (room // width) + "x" * (room % width) + tail
        self.step_texts([text])

    def step_bulk(self, count: int, mode: int) -> None:
        """`count` joins in one burst: fresh rooms, one room again and again, unknown rooms or
        history rooms; with an id each, with a small info when mode bit 2 is set."""
        texts = []
        for n in range(count):
            room = (f"chat:bulk-{n}", "chat:a", f"nope-{n}", f"hist:bulk-{n % 64}")[mode & 3]
            command: dict[str, Any] = {"op": "join", "room": room, "id": self.next_id}
            self.next_id += 1
            if mode & 4:
                command["info"] = {"n": n}
            texts.append(as_text(command))
        self.step_texts(texts)

    # -- judging -------------------------------------------------------------------------------------------
    def after_step(self, sent: list[Sent]) -> None:
        """Judge what both clients got after a step (`sent`: the fuzzed client's messages)."""
        fuzz, model = self.fuzz, self.model
        if fuzz is not None and model is not None:
            self.judge_fuzz(fuzz, model, sent)
        self.observer_messages()
        self.check_observer_view()

    def judge_fuzz(self, fuzz: Client, model: Model, sent: list[Sent]) -> None:
        messages = [parse_message(text, "the fuzzed client") for text in fuzz.take()]
        for message in messages:
            SEEN.add(f"push:{message['push']}" if "push" in message
                     else f"error:{message['error']['name']}" if "error" in message else "result")
        pushes = [m for m in messages if "push" in m]
        replies = deque(m for m in messages if "push" not in m)
        now = self.loop.now
        was_closed = fuzz.close is not None and model.phase == "closed"
        if any(item.kind == "big" for item in sent):
            model.may_close.add(1009)  # the WebSocket layer reads the frame before the live layer its queue
        for index, item in enumerate(sent):
            if model.closes or model.phase in ("closing", "closed"):
                # A close is due: the commands after it should not run.
                self.unjudged = f" ({sorted(model.closes)}, before {len(sent) - index} more commands of the " \
                    f"burst: {item.text[:80]!r}...)"
                break
            if item.kind == "binary":
                model.closes = {4002}
                break
            if item.kind == "big":
                model.closes = {1009}
                break
            spec = model.expect(item.text, now)
            self.judge(spec, replies)
        assert not replies, (f"answered a command sent after the close {sorted(model.closes)} was due: "
                             if model.closes else "replies no command asked for: ") + repr(list(replies)[:3])
        due, allowed = model.timed_closes(now)
        close = fuzz.close
        if close is not None and not was_closed:
            code = close[0]
            assert code in DOC_CLOSES or code in model.closes, f"closed with the undocumented code {code} {close[1]!r}"
            allowed |= model.closes | model.may_close
            assert code in allowed, \
                f"closed with {code} {close[1]!r}; the doc allows {sorted(allowed) or 'no close'} now"
            SEEN.add(f"close:{code}")
            model.phase = "closed"
            self.connection_ended()
        elif close is None:
            assert not model.closes and not due, \
                f"not closed; the doc wants a close with {sorted(model.closes or due)} by now"
        if close is None:
            self.check_pushes("fuzz", pushes)

    def judge(self, spec: Spec, replies: deque[dict[str, Any]]) -> None:
        """One command's answer: the next reply, when it is this command's."""
        model, fuzz = self.model, self.fuzz
        assert model is not None and fuzz is not None
        if spec.silent:
            return
        rate_must = rate_may = False
        if model.phase == "connected" and spec.counted is not False:
            rate_must = model.commands.hi < 1
            rate_may = model.commands.lo < 1
        reply = replies[0] if replies else None
        if reply is not None and reply["id"] != spec.id and not (reply["id"] is None and "error" in reply):
            reply = None  # another command's
        if reply is None:
            if fuzz.close is not None:  # closed before it was answered
                model.closes |= spec.closes
                return
            assert not spec.must and not rate_must, f"no answer; the doc wants {self.wanted(spec, rate_must)}"
            assert spec.id is None, f"no answer to the command with id {spec.id}; the doc wants " \
                f"{self.wanted(spec, rate_must, rate_may)}"
            # A command without an id that worked: no reply, as the doc says.
            if model.phase == "connected" and spec.counted is not False:
                model.commands.took(True)
            if spec.on_result is not None:
                spec.on_result(None)
            self.after_answer(spec, error=False)
            return
        replies.popleft()
        if "error" in reply:
            error = reply["error"]
            name = error["name"]
            allowed = spec.allowed()
            if rate_may:
                allowed["rate_limited"] = {"commands_per_second"}
            if rate_must:
                allowed = {"rate_limited": {"commands_per_second"}}
            assert name in allowed, f"answered {error['code']} {name} ({error['message']!r}); the doc allows " \
                f"{self.wanted(spec, rate_must, rate_may)}"
            assert error["code"] == ERROR_CODES.get(name), f"error {name} with code {error['code']}"
            assert error.get("limit") in allowed[name], f"error {name} names the limit {error.get('limit')!r}, " \
                f"the doc's is {' or '.join(map(repr, allowed[name]))}"
            assert reply["id"] in spec.ids, f"error reply with id {reply['id']!r}; the command's is {spec.id!r}"
            if model.phase == "connected" and spec.counted is not False:
                model.commands.took(False if name == "rate_limited" else spec.counted)
            self.after_answer(spec, error=True)
            return
        assert not spec.must and not rate_must, \
            f"answered {reply['result']!r}; the doc wants {self.wanted(spec, rate_must)}"
        assert spec.on_result is not None, f"a result {reply['result']!r} where the doc has none"
        if model.phase == "connected" and spec.counted is not False:
            model.commands.took(True)
        spec.on_result(reply["result"])
        self.after_answer(spec, error=False)

    def wanted(self, spec: Spec, rate_limited: bool, rate_may: bool = False) -> str:
        if rate_limited:
            return "429 rate_limited"
        names = sorted(spec.must) or [*sorted(spec.optional), *(["rate_limited"] if rate_may else []), "a result"]
        return " or ".join(names)

    def after_answer(self, spec: Spec, error: bool) -> None:
        """Closes the answer makes due, and the error budget (close 4004 when it is spent)."""
        model = self.model
        assert model is not None
        model.closes |= spec.closes
        if error and model.phase == "connected":
            errors = model.errors
            if errors.hi < 1:
                model.closes |= {4004}
            elif errors.lo >= 1:
                errors.took(True)
            else:
                model.may_close.add(4004)
                errors.took(None)

    def check_pushes(self, who: str, pushes: list[dict[str, Any]]) -> None:
        model = self.model
        assert model is not None
        for message in pushes:
            if message["push"] == "presence":
                room = message["room"]
                assert room in model.rooms or room in self.pending[who] or room in self.members, \
                    f"{who} got presence of {room!r}, which it is not in"
        self.check_deliveries(who, pushes)

    def check_observer_view(self) -> None:
        expected = self.presence_of("chat:lobby")
        assert canonical(self.obs_view) == canonical(expected), \
            f"the observer sees {self.obs_view!r} in chat:lobby; its members are {expected!r}"

    def connection_ended(self) -> None:
        """The fuzzed connection is gone: out of every room (the observer sees it leave)."""
        for room in list(self.members):
            self.member_left("fuzz", room)
        self.pending["fuzz"].clear()
        self.replays["fuzz"].clear()
        if self.model is not None:
            self.model.rooms.clear()

    def end_input(self, close: bool) -> None:
        fuzz, model = self.fuzz, self.model
        assert fuzz is not None and model is not None
        if fuzz.open and close:
            fuzz.send_close(1000)
            model.closes = {1000, 1005}
            model.phase = "closing"
            self.settle(1)
            self.after_step([])
        if not fuzz.transport.lost:
            fuzz.transport.lose()  # the client goes (a reset, or its close after the server's)
        self.settle(1)
        fuzz.pump()
        if model.phase != "closed":
            model.phase = "closed"
            self.connection_ended()
        self.observer_messages()
        self.check_observer_view()
        self.check_clean()
        # The observer's own commands: the fuzzed connection is gone from the presence, the
        # history is what was published.
        since = max(0, (self.positions["hist:log"].offset or 0) - 3)
        presence, history = self.obs_commands([{"op": "presence", "room": "chat:lobby"},
                                               {"op": "history", "room": "hist:log", "since": since}])
        assert canonical(presence) == canonical({"presence": self.presence_of("chat:lobby")}), \
            f"the observer's presence of chat:lobby: {presence!r}, expected {self.presence_of('chat:lobby')!r}"
        self.check_history("hist:log", since, None, history, "obs")

    def check_clean(self) -> None:
        """Nothing of the fuzzed connection left: no task, no server connection, no member."""
        assert len(self.state.connections) == 1, f"server connections left: {self.state.connections!r}"
        left = set(asyncio.all_tasks(self.loop)) - self.baseline_tasks
        assert not left, f"tasks left after the connection ended: {left!r}"
        assert self.app.hub.ids() == [self.ids["obs"]], f"hub connections: {self.app.hub.ids()!r}"
        fuzz_id = self.fuzz_id
        if fuzz_id is not None:
            for room in ("chat:lobby", "hist:log", "chat:a", "chat:b", "hist:a", "vip:v"):
                assert fuzz_id not in self.app.hub.members(room), f"{fuzz_id} still in {room!r}"

    def check(self, data: bytes) -> None:
        """Run one input; raise on a finding. After a failure the harness is closed."""
        if len(data) < 2:
            return
        try:
            with self.active():
                self.run(data)
        except BaseException:
            self.close()
            raise


# -- the reader alone -------------------------------------------------------------------------------------
READER_SETTINGS = (LiveSettings(), PROFILES[1].settings)
WRAPS = ('{"op":"join","room":%s,"id":1}', '{"op":"join","room":"chat:a","info":%s,"id":2}',
         '{"op":"publish","room":"chat:a","data":%s}', '{"op":"join","room":"hist:a","since":%s,"id":3}',
         '{"op":"history","room":"hist:a","since":%s,"limit":%s,"id":4}', '{"op":"refresh","token":%s,"id":5}',
         '{"id":%s,"op":"presence","room":"chat:a"}', '{"op":%s,"id":6}')


def check_reader(data: bytes) -> None:
    """`read_command` and the Command's field accessors on one text (see the module doc)."""
    if len(data) < 2:
        return
    settings = READER_SETTINGS[data[1] & 2 and 1]
    text = data[2:].decode("utf-8", "replace") * (64 if data[1] & 4 else 1)
    if data[1] & 1:
        wrap = WRAPS[(data[1] >> 3) % len(WRAPS)]
        text = wrap.replace("%s", text)
    spec, command = read_spec(text, settings)
    try:
        read = live_commands.read_command(text, settings)
    except live_commands.CommandError as error:
        name = error.error.wire_name
        assert (error.error.code, name) in DOC_ERRORS, f"read_command: undocumented error {error.error.code} {name}"
        allowed = spec.allowed()
        assert name in allowed, \
            f"read_command refused {text[:80]!r} with {name}; the doc: {sorted(allowed) or 'a command'}"
        assert error.limit in allowed[name], f"read_command: {name} with limit {error.limit!r}"
        assert error.command_id in spec.ids, f"read_command: error id {error.command_id!r}"
        _encodable(live_commands.error_reply(error))
        return
    assert not spec.must, f"read_command took {text[:80]!r}; the doc: {sorted(spec.must)}"
    assert command is not None and read.op == command["op"] and read.id == spec.id, f"read_command: {read!r}"
    assert type(read.id) is int or read.id is None, f"read_command: id {read.id!r}"
    accessors = (("room", lambda: read.room(settings)), ("token", read.token), ("since", read.since),
                 ("info", lambda: read.info(settings)), ("offset", lambda: read.offset("since")),
                 ("limit", lambda: read.offset("limit")))
    for name, accessor in accessors:
        try:
            value = accessor()
        except live_commands.CommandError as error:
            assert (error.error.code, error.error.wire_name) in DOC_ERRORS, f"{name}: undocumented {error.error}"
            assert error.command_id == read.id, f"{name}: error id {error.command_id!r}, the command's {read.id!r}"
            if error.error.wire_name in LIMIT_ERRORS:
                assert error.limit in DOC_SETTINGS, f"{name}: limit {error.limit!r}"
            _encodable(live_commands.error_reply(error))
            continue
        if name in ("room", "info") and value is not None:
            # What the reader takes, the server sends back to others: it must go as JSON.
            _encodable(live_commands.push("presence", room=value if name == "room" else "r",
                                          joined={"x": value if name == "info" else None}, left={}))
    if read.id is not None:
        _encodable(live_commands.reply(read.id, {}))


def _encodable(text: str) -> None:
    try:
        strict_loads(text)
        text.encode("utf-8")
    except (ValueError, RecursionError) as exc:
        raise AssertionError(f"the server would send what is not JSON ({exc}): {text[:120]!r}") from None


# -- seeds ------------------------------------------------------------------------------------------------------
def _index(palette: list[Any], value: Any) -> int:
    for index, item in enumerate(palette):
        if item is value:
            return index
    for index, item in enumerate(palette):
        if type(item) is type(value) and item == value:
            return index
    raise ValueError(f"{value!r} is in no palette")


def step(kind: int, *args: int) -> bytes:
    return bytes((kind, *args))


def command(op: Any, command_id: Any = FRESH_ID, kind: int = STEP_COMMAND, **fields: Any) -> bytes:
    """The bytes of a COMMAND step (or a FLOOD's command part, kind=None) for palette values."""
    mask = 0
    values = []
    for bit, name in enumerate(FIELDS):
        if name in fields:
            mask |= 1 << bit
            values.append(_index(PALETTES[name], fields[name]))
    body = bytes((_index(OPS, op), _index(IDS, command_id), mask, *values))
    return body if kind is None else bytes((kind,)) + body


def text(value: str) -> bytes:
    return step(STEP_TEXT, TEXTS.index(value))


def seeds() -> dict[str, bytes]:
    """Small inputs reaching each documented outcome (written to corpus/live/seed-* by
    `python fuzz/fuzz_live.py`; see fuzz/README.md)."""
    CONNECT, SMALL, BULK, READER, CLOSE = 4, 1, 2, 3, 8
    join = lambda room, **kw: command("join", room=room, **kw)  # noqa: E731
    return {
        "connect": bytes((CONNECT | CLOSE, 1)),
        "connect-by-hand": bytes((0, 1)) + command("connect", token="user:fuzz"),
        "connect-without-id": bytes((0, 1)) + command("connect", ABSENT, token=ABSENT) + command("presence",
                                                                                                 room="chat:lobby"),
        "connect-refused": bytes((0, 1)) + command("connect", token="bad"),
        "connect-boom": bytes((0, 1)) + command("connect", token="boom"),
        "connect-expired": bytes((0, 1)) + command("connect", token="expired"),
        "connect-token-type": bytes((0, 1)) + command("connect", token=123),
        "connect-twice": bytes((CONNECT, 1)) + command("connect", token="admin"),
        "command-before-connect": bytes((0, 1)) + join("chat:lobby"),
        "junk-before-connect": bytes((0, 1)) + text("{"),
        "binary-before-connect": bytes((0, 1)) + step(STEP_BINARY, 3) + b"abc",
        "no-subprotocol": bytes((0x10, 1)),
        "other-subprotocols": bytes((0x20 | CONNECT, 1)) + join("chat:a"),
        "v2-only": bytes((0x30, 1)),
        "connect-timeout": bytes((0, 1)) + step(STEP_TICK, 60),
        "connect-timeout-small": bytes((SMALL, 1)) + step(STEP_TICK, 7) + step(STEP_TICK, 2),
        "join-lobby-publish-leave": bytes((CONNECT | CLOSE, 1)) + join("chat:lobby", info={"name": "fuzz"})
        + command("publish", room="chat:lobby", data={"text": "hi"}) + command("presence", room="chat:lobby")
        + step(STEP_SERVER, 0, 7) + step(STEP_OBSERVER, 0) + command("leave", room="chat:lobby"),
        "join-without-ids": bytes((CONNECT, 1)) + command("join", ABSENT, room="chat:lobby")
        + command("publish", ABSENT, room="chat:lobby", data=[1, "a"]) + command("leave", ABSENT, room="chat:lobby"),
        "history-room": bytes((CONNECT, 1)) + join("hist:log") + command("publish", room="hist:log", data=1)
        + step(STEP_SERVER, 1, 2) + command("history", room="hist:log", since_offset=1, limit=3)
        + command("history", room="hist:log") + step(STEP_OBSERVER, 3),
        "recover": bytes((CONNECT, 1)) + join("hist:log") + command("leave", room="hist:log")
        + step(STEP_SERVER, 1, 1) + step(STEP_SERVER, 1, 2) + join("hist:log", since=SINCES[2]),
        "recover-now": bytes((CONNECT, 1)) + join("hist:log", since=SINCES[1]),
        "recover-other-epoch": bytes((CONNECT, 1)) + join("hist:log", since=SINCES[5]),
        "recover-too-far": bytes((CONNECT, 1)) + step(STEP_SERVER, 1, 1) * 7 + join("hist:log", since=SINCES[3]),
        "recover-future": bytes((CONNECT, 1)) + join("hist:a", since=SINCES[4]),
        "bad-since": bytes((CONNECT, 1)) + join("hist:log", since=SINCES[6]) + join("chat:a", since="x")
        + join("hist:a", since=SINCES[9]),
        "no-history": bytes((CONNECT, 1)) + join("chat:a") + command("history", room="chat:a"),
        "no-presence": bytes((CONNECT, 1)) + join("quiet:q") + command("presence", room="quiet:q"),
        "not-joined": bytes((CONNECT, 1)) + command("leave", room="chat:a") + command("publish", room="chat:a", data=1)
        + command("presence", room="chat:b") + command("history", room="hist:a"),
        "forbidden": bytes((CONNECT, 1)) + join("vip:v") + join("quiet:q") + command("publish", room="quiet:q", data=1)
        + join("chat:a") + command("publish", room="chat:a", data="refuse-me"),
        "admin": bytes((0, 1)) + command("connect", token="admin") + join("vip:v") + command("presence", room="vip:v"),
        "hook-fails": bytes((CONNECT, 1)) + join("boom:b") + join("chat:a") + command("publish", room="chat:a",
                                                                                       data="boom-me"),
        "unknown-room": bytes((CONNECT, 1)) + join("nowhere") + join("chat:") + join("CHAT:lobby"),
        "already-joined": bytes((CONNECT, 1)) + join("chat:a") + join("chat:a"),
        "wrong-types": bytes((CONNECT, 1)) + join(5) + join(None) + join([]) + join(True) + command(7)
        + command(None) + command(ABSENT) + command("join", "7") + command("join", True) + command("join", 1.5),
        "unknown-op": bytes((CONNECT, 1)) + command("nope") + command("") + command("JOIN", room="chat:a"),
        "pong": bytes((CONNECT, 1)) + command("pong") + command("pong", ABSENT),
        "refresh": bytes((CONNECT, 1)) + command("refresh", token="short") + command("refresh", token="bad")
        + command("refresh", token=123) + command("refresh", token="expired") + command("refresh", token="boom")
        + command("refresh", token="admin") + join("vip:v"),
        "expiry": bytes((0, 1)) + command("connect", token="short") + step(STEP_TICK, 8) + step(STEP_TICK, 8),
        "expiry-refreshed": bytes((0, 1)) + command("connect", token="short") + step(STEP_TICK, 8)
        + command("refresh", token="user:fuzz") + step(STEP_TICK, 40),
        "heartbeat": bytes((CONNECT, 1)) + step(STEP_TICK, 255) + step(STEP_TICK, 255),
        "heartbeat-answered": bytes((SMALL | CONNECT, 1)) + (step(STEP_TICK, 12) + command("pong", ABSENT)) * 4,
        "room-names": bytes((CONNECT, 1)) + join(ROOMS[16]) + join(ROOMS[17]) + join(ROOMS[18])
        + join("chat:\u00e9\u20ac\U0001f600") + join("chat:\x00"),
        "room-names-small": bytes((SMALL | CONNECT, 1)) + join(ROOMS[26]) + join(ROOMS[16]) + join(ROOMS[17])
        + join(ROOMS[18]),
        "infos": bytes((CONNECT, 1)) + join("chat:a", info=INFOS[6]) + join("chat:b", info=INFOS[7])
        + join("chat:lobby", info=INFOS[8]) + join("chat:lobby", info=INFOS[9]) + join("hist:a", info=INFOS[7]),
        "infos-small": bytes((SMALL | CONNECT, 1)) + join("chat:a", info=INFOS[6]) + join("chat:b", info=INFOS[7])
        + join("chat:lobby", info=INFOS[8]) + join("chat:lobby", info=INFOS[9]),
        "deep-data": bytes((CONNECT, 1)) + join("chat:lobby") + command("publish", room="chat:lobby", data=DATAS[10])
        + command("publish", room="chat:lobby", data=DATAS[11]),
        "texts": bytes((CONNECT, 1)) + b"".join(text(t) for t in TEXTS[:22]),
        "raw": bytes((CONNECT, 1)) + step(STEP_RAW, 5) + b"{\"op\"" + step(STEP_RAW, 4) + b"\xff\xfe{}",
        "binary": bytes((CONNECT, 1)) + join("chat:lobby") + step(STEP_BINARY, 2) + b"{}",
        "fragmented": bytes((CONNECT, 1)) + bytes((STEP_COMMAND | 0x10,)) + command("join", kind=None, room="chat:a")
        + bytes((STEP_COMMAND | 0x30,)) + command("join", kind=None, room="chat:\u00e9\u20ac\U0001f600"),
        "big-commands": bytes((CONNECT, 1)) + b"".join(step(STEP_BIG, kind, size) for kind in range(3)
                                                       for size in (0, 1, 2, 8, 17, 26)),
        "big-commands-2": bytes((CONNECT, 1)) + b"".join(step(STEP_BIG, kind, size) for kind in range(3, 6)
                                                         for size in (0, 1, 2, 8, 17, 26)),
        "big-frame": bytes((CONNECT, 1)) + step(STEP_BIG, 2, 4),
        "big-small": bytes((SMALL | CONNECT, 1)) + b"".join(step(STEP_BIG, kind, size) for kind in (0, 1, 3)
                                                            for size in (0, 1, 2, 3, 12)) + step(STEP_BIG, 4, 4),
        "bulk-joins": bytes((BULK | CONNECT, 1)) + step(STEP_BULK, 187, 0xF0) + step(STEP_OBSERVER, 1),
        "bulk-joins-default": bytes((CONNECT, 1)) + step(STEP_BULK, 159, 0),
        "bulk-same-room": bytes((BULK | CONNECT, 1)) + step(STEP_BULK, 199, 1),
        "bulk-unknown": bytes((BULK | CONNECT, 1)) + step(STEP_BULK, 255, 2),
        "bulk-history-info": bytes((BULK | CONNECT, 1)) + step(STEP_BULK, 69, 7),
        "flood": bytes((CONNECT, 1)) + join("chat:lobby") + step(STEP_FLOOD, 80) + command("publish", kind=None,
                                                                                          room="chat:lobby", data=1),
        "flood-refill": bytes((SMALL | CONNECT, 1)) + step(STEP_FLOOD, 3) + command("presence", kind=None,
                                                                                  room="chat:a")
        + step(STEP_TICK, 4) + command("nope"),
        "burst-mixed": bytes((CONNECT, 1)) + bytes((STEP_BURST, 3, 0)) + command("join", kind=None, room="chat:a")
        + bytes((0,)) + command("publish", kind=None, room="chat:a", data={"text": "hi"}) + bytes((0,))
        + command("leave", kind=None, room="chat:a"),
        "flood-pongs": bytes((CONNECT, 1)) + step(STEP_FLOOD, 160) + command("pong", kind=None) + join("chat:a"),
        "errors-budget": bytes((SMALL | CONNECT, 1)) + text("{") * 8,
        "errors-refill": bytes((SMALL | CONNECT, 1)) + text("{") * 5 + step(STEP_TICK, 12) + text("{") * 5,
        "too-many-rooms": bytes((SMALL | CONNECT, 1)) + step(STEP_BULK, 5, 0),
        "client-close": bytes((CONNECT, 1)) + join("chat:lobby") + step(STEP_CLOSE, 1) + step(STEP_OBSERVER, 1),
        "client-close-4000": bytes((CONNECT, 1)) + step(STEP_CLOSE, 2),
        "ping": bytes((CONNECT, 1)) + step(STEP_PING, 3) + b"abc" + join("chat:a"),
        "observer": bytes((CONNECT, 1)) + join("chat:lobby") + join("hist:log") + b"".join(
            step(STEP_OBSERVER, n) for n in range(4)) + step(STEP_SERVER, 2, 1) + step(STEP_SERVER, 3, 1),
        "extra-fields": bytes((CONNECT, 1)) + join("chat:a", extra=1) + command("presence", room="chat:a", extra="zzz"),
        "reader": bytes((READER, 0)) + b'{"op":"join","room":"chat:a","id":1}',
        "reader-small": bytes((READER, 2)) + b'{"op":"join","room":"chat:aaaaaaaaaaaaaaaaaaaaaaaaaaaa","id":1}',
        "reader-wrapped": bytes((READER, 1 | 1 << 3)) + b'{"a":[1,2,3]}',
        "reader-wrapped-data": bytes((READER, 1 | 2 << 3)) + b'{"a":[1,2,3]}',
        "reader-wrapped-history": bytes((READER, 1 | 4 << 3)) + b'3,"limit":-1',
        "reader-repeated": bytes((READER, 4)) + b"[1]",
        "reader-not-json": bytes((READER, 0)) + b"{'op'",
    }


def write_seeds() -> None:
    directory = pathlib.Path(__file__).resolve().parent / "corpus" / "live"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    made = seeds()
    for name, data in made.items():
        (directory / f"seed-{name}").write_bytes(data)
    print(f"{directory.relative_to(ROOT)}: {len(made)} seeds")


# -- entry points ---------------------------------------------------------------------------------------------
_current: dict[int, Harness] = {}  # profile -> its harness, once made


def harness(profile: int) -> Harness:
    """The module's harness of a profile (made on first use)."""
    if profile not in _current:
        _current[profile] = Harness(PROFILES[profile])
    return _current[profile]


def check(data: bytes) -> None:
    """One fuzz input (see the module docstring)."""
    if len(data) < 2:
        return
    profile = data[0] & 3
    if profile == 3:
        check_reader(data)
        return
    try:
        harness(profile).check(data)
    except BaseException:
        _current.pop(profile, None)  # what the failed input left behind must not spill into the next one
        raise


if __name__ == "__main__":
    write_seeds()
