"""The fuzz targets of fuzz/ (fuzz_frames.py, fuzz_handshake.py, fuzz_http.py) as plain
tests: every seed (fuzz/corpus/TARGET, as fuzz/make_seeds.py writes them) and every saved
finding (fuzz/crashers/TARGET) must pass its target's check, the frame parser's on both
unmasking paths; the seeds must reach every documented outcome; and each check must fail
when the code under it misbehaves, so a passing corpus means something. `make fuzz` runs
the same checks under atheris (fuzz/README.md)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

from tether import App
from tether.protocol import FrameParser
from tether.server.http11 import HttpProtocol

FUZZ = pathlib.Path(__file__).resolve().parents[1] / "fuzz"


def load(name: str) -> ModuleType:
    """fuzz/NAME.py as a module (fuzz/ is not a package: atheris runs its files as scripts,
    with fuzz/ on sys.path for what they share)."""
    if str(FUZZ) not in sys.path:
        sys.path.append(str(FUZZ))
    spec = importlib.util.spec_from_file_location(f"tether_fuzz_{name}", FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz_frames = load("fuzz_frames")
fuzz_handshake = load("fuzz_handshake")
fuzz_http = load("fuzz_http")


def inputs(target: str) -> list[pathlib.Path]:
    files = []
    for kind in ("corpus", "crashers"):
        directory = FUZZ / kind / target
        if directory.is_dir():
            files += sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def ids(paths: list[pathlib.Path]) -> list[str]:
    return [f"{p.parent.parent.name}/{p.name}" for p in paths]


FRAMES, HANDSHAKE, HTTP = inputs("frames"), inputs("handshake"), inputs("http")


@pytest.mark.parametrize("path", FRAMES, ids=ids(FRAMES))
def test_frames(path):
    fuzz_frames.check(path.read_bytes())


def test_frames_on_the_pure_python_unmasking():
    """The same inputs in a process where TETHER_PURE_PYTHON=1 selected the fallback."""
    script = textwrap.dedent(f"""
        import importlib.util, json, sys, traceback
        from tether.protocol import masking
        sys.path.append({str(FUZZ)!r})
        spec = importlib.util.spec_from_file_location("fuzz_frames", {str(FUZZ / "fuzz_frames.py")!r})
        target = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(target)
        failures = {{}}
        for path in sys.argv[1:]:
            try:
                target.check(open(path, "rb").read())
            except BaseException:
                failures[path] = traceback.format_exc()
        print(json.dumps({{"accelerated": masking.ACCELERATED, "failures": failures}}))
    """)
    result = subprocess.run([sys.executable, "-c", script, *map(str, FRAMES)], capture_output=True, text=True,
                            env=dict(os.environ, TETHER_PURE_PYTHON="1"), timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["accelerated"] is False
    assert report["failures"] == {}, "\n".join(report["failures"].values())


@pytest.mark.parametrize("path", HANDSHAKE, ids=ids(HANDSHAKE))
def test_handshake(path):
    fuzz_handshake.check(path.read_bytes())


@pytest.mark.parametrize("path", HTTP, ids=ids(HTTP))
def test_http(path):
    fuzz_http.check(path.read_bytes())


def test_the_seeds_are_what_make_seeds_writes():
    """The committed seeds match fuzz/make_seeds.py (run it after changing an input format)."""
    make_seeds = load("make_seeds")
    for target, seeds in (("frames", make_seeds.frame_seeds()), ("handshake", make_seeds.handshake_seeds()),
                          ("http", make_seeds.http_seeds())):
        committed = {p.name[5:]: p.read_bytes() for p in (FUZZ / "corpus" / target).glob("seed-*")}
        assert committed == seeds, f"fuzz/corpus/{target} is stale: run `python fuzz/make_seeds.py`"


# -- the seeds reach every documented outcome ---------------------------------------------------
def frame_events(data: bytes) -> list[tuple[int, object]]:
    config, seed, rest = data[0], data[1], data[2:]
    stream = fuzz_frames.program(config, seed, rest)[0] if config & 0x10 else rest
    return fuzz_frames.parse_both_ways(config, seed, stream)


def test_the_frame_seeds_give_every_event_kind_and_error_code():
    seen = set()
    for path in FRAMES:
        for kind, value in frame_events(path.read_bytes()):
            seen.add(("error", value) if kind == -1 else kind)
    assert seen >= {1, 2, 8, 9, 10, ("error", 1002), ("error", 1007), ("error", 1009)}, seen


def test_the_handshake_seeds_give_an_acceptance_400_and_426():
    seen = set()
    for path in HANDSHAKE:
        data = path.read_bytes()
        text = data[1:].decode("utf-8", "replace") if data[0] & 1 else data[1:].decode("latin-1")
        method, headers, _ = fuzz_handshake.parse(text)
        seen.add("accepted" if fuzz_handshake.check_validate(method, headers) else "refused")
        try:
            fuzz_handshake.validate_upgrade(method, headers)
        except fuzz_handshake.HandshakeError as exc:
            seen.add(exc.status)
    assert seen >= {"accepted", "refused", 400, 426}, seen


def test_the_http_seeds_give_every_answer_of_the_request_path():
    harness = fuzz_http.Harness()
    statuses = set()
    try:
        for path in HTTP:
            transport = harness.run(path.read_bytes())
            statuses.update(int(line[9:12]) for line in bytes(transport.written).split(b"\r\n")
                            if line[:9] == b"HTTP/1.1 ")
    finally:
        harness.close()
    assert statuses >= {101, 200, 400, 403, 404, 405, 413, 426, 431}, statuses


# -- each check fails when the code under it misbehaves -------------------------------------------
SEED = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in FRAMES + HANDSHAKE + HTTP}


def test_the_frames_check_fails_on_an_exception_the_parser_does_not_document(monkeypatch):
    class Raising(FrameParser):
        def feed(self, data):
            events = super().feed(data)
            if any(kind == 9 for kind, _ in events):
                raise IndexError("a bug")
            return events

    monkeypatch.setattr(fuzz_frames, "FrameParser", Raising)
    with pytest.raises(IndexError):
        fuzz_frames.check(SEED["frames/seed-raw-ping-pong"])


def test_the_frames_check_fails_on_a_message_over_the_limit(monkeypatch):
    class Unbounded(FrameParser):
        def __init__(self, max_message_size, *args, **kwargs):
            super().__init__(1 << 30, *args, **kwargs)

    monkeypatch.setattr(fuzz_frames, "FrameParser", Unbounded)
    with pytest.raises(AssertionError, match="over max_message_size"):
        fuzz_frames.check(SEED["frames/seed-raw-too-big-16"])


def test_the_frames_check_fails_when_the_cut_points_change_the_events(monkeypatch):
    class Forgetful(FrameParser):  # loses a byte fed alone
        def feed(self, data):
            return [] if len(data) == 1 and data != b"\x81" else super().feed(data)

    monkeypatch.setattr(fuzz_frames, "FrameParser", Forgetful)
    with pytest.raises(AssertionError, match="other events"):
        fuzz_frames.check(SEED["frames/seed-raw-byte-at-a-time"])


def test_the_frames_check_fails_on_events_after_an_error(monkeypatch):
    class Chatty(FrameParser):
        def feed(self, data):
            events = super().feed(data)
            return [*events, (1, "more")] if events and events[-1][0] == -1 else events

    monkeypatch.setattr(fuzz_frames, "FrameParser", Chatty)
    with pytest.raises(AssertionError, match="after a protocol error"):
        fuzz_frames.check(SEED["frames/seed-raw-unmasked"])


def test_the_frames_check_fails_on_a_program_the_parser_gets_wrong(monkeypatch):
    class Swapping(FrameParser):  # binary for text: the shapes are right, the content is not
        def feed(self, data):
            return [(2, value.encode()) if kind == 1 else (kind, value) for kind, value in super().feed(data)]

    monkeypatch.setattr(fuzz_frames, "FrameParser", Swapping)
    with pytest.raises(AssertionError, match="valid frames gave other events"):
        fuzz_frames.check(SEED["frames/seed-program-mixed"])


def test_the_handshake_check_fails_on_an_upgrade_accepted_against_the_rfc(monkeypatch):
    monkeypatch.setattr(fuzz_handshake, "validate_upgrade", lambda method, headers: headers["sec-websocket-key"])
    with pytest.raises(AssertionError, match="accepted a 'POST' upgrade"):
        fuzz_handshake.check(SEED["handshake/seed-post"])


def test_the_handshake_check_fails_on_a_refusal_with_another_status(monkeypatch):
    def refuse(method, headers):
        raise fuzz_handshake.HandshakeError(500, "no")

    monkeypatch.setattr(fuzz_handshake, "validate_upgrade", refuse)
    with pytest.raises(AssertionError, match="status 500"):
        fuzz_handshake.check(SEED["handshake/seed-valid"])


def http_harness(**routes):
    app = App()
    for path, handler in routes.items():
        app.get("/" + path)(handler)
    return fuzz_http.Harness(app)


def test_the_http_check_fails_on_an_error_the_server_logs():
    async def boom():
        raise RuntimeError("handler bug")  # the App logs it and answers 500

    harness = http_harness(boom=boom)
    with pytest.raises(AssertionError, match="logged at ERROR"):
        harness.check(b"\x00\x09GET /boom HTTP/1.1\r\n\r\n")


def test_the_http_check_fails_on_a_task_left_behind():
    async def leak():
        asyncio.ensure_future(asyncio.sleep(3600))
        return "ok"

    harness = http_harness(leak=leak)
    with pytest.raises(AssertionError, match="tasks left"):
        harness.check(b"\x00\x09GET /leak HTTP/1.1\r\n\r\n")


def test_the_http_check_fails_on_an_exception_out_of_the_protocol(monkeypatch):
    def data_received(self, data):
        raise KeyError("parser bug")

    monkeypatch.setattr(HttpProtocol, "data_received", data_received)
    with pytest.raises(KeyError):
        fuzz_http.Harness().check(SEED["http/seed-get"])


def test_the_http_check_passes_a_refusal_and_a_protocol_error_as_documented():
    """The opposite: a 400 and a close 1002 are answers, not findings."""
    harness = fuzz_http.Harness()
    try:
        harness.check(SEED["http/seed-malformed"])
        harness.check(SEED["http/seed-ws-protocol-error"])
    finally:
        harness.close()


# -- live channels (fuzz/fuzz_live.py) -------------------------------------------------------------
fuzz_live = load("fuzz_live")
LIVE = inputs("live")
# Findings of fuzz_live reported and not fixed yet (fuzz/crashers/live, name -> what is wrong):
# each must still fail, so that its fix shows here (strict xfail) and its entry goes. The first
# twelve, fixed by 52da442, stay in crashers/live as regression inputs.
LIVE_OPEN_FINDINGS: dict[str, str] = {}


def live_params(paths: list[pathlib.Path]) -> list[object]:
    return [pytest.param(p, id=f"{p.parent.parent.name}/{p.name}",
                         marks=[pytest.mark.xfail(strict=True, reason=LIVE_OPEN_FINDINGS[p.name])]
                         if p.name in LIVE_OPEN_FINDINGS else [])
            for p in paths]


@pytest.mark.parametrize("path", live_params(LIVE))
def test_live(path):
    fuzz_live.check(path.read_bytes())


def test_the_live_open_findings_are_saved():
    assert set(LIVE_OPEN_FINDINGS) <= {p.name for p in LIVE if p.parent.parent.name == "crashers"}


def test_the_live_seeds_are_what_fuzz_live_writes():
    """The committed seeds match fuzz_live.seeds() (`python fuzz/fuzz_live.py` writes them)."""
    committed = {p.name[5:]: p.read_bytes() for p in (FUZZ / "corpus" / "live").glob("seed-*")}
    assert committed == fuzz_live.seeds(), "fuzz/corpus/live is stale: run `python fuzz/fuzz_live.py`"


def test_the_live_check_reads_the_docs_tables():
    assert {(400, "bad_request"), (409, "already_connected"), (429, "too_many_rooms"),
            (500, "internal")} <= fuzz_live.DOC_ERRORS
    assert {1000, 1009, 4001, 4002, 4003, 4004, 4005} <= fuzz_live.DOC_CLOSES
    assert {"max_command_size", "commands_per_second", "max_rooms", "max_info_size", "max_room_length"} \
        <= fuzz_live.DOC_SETTINGS


def test_the_live_seeds_reach_every_documented_answer():
    """Every error of the doc's table, every close code a client can cause, each push a
    client gets from one node, a recovered and a refused recovery."""
    fuzz_live.SEEN.clear()
    for path in LIVE:
        if path.name.startswith("seed-"):
            fuzz_live.check(path.read_bytes())
    # 503 unavailable needs a backplane that cannot be reached: not so in one process.
    wanted = {f"error:{name}" for _, name in fuzz_live.DOC_ERRORS} - {"error:unavailable"}
    wanted |= {f"close:{code}" for code in (1000, 1009, 4001, 4002, 4003, 4004, 4005)}
    wanted |= {"push:message", "push:presence", "push:ping", "recovered", "not recovered"}
    assert fuzz_live.SEEN >= wanted, sorted(wanted - fuzz_live.SEEN)


# -- the live check fails when the server misbehaves ------------------------------------------------
LIVE_SEED = {p.name[5:]: p.read_bytes() for p in LIVE if p.name.startswith("seed-")}


LIVE_CRASHER = {p.name: p.read_bytes() for p in LIVE if p.parent.parent.name == "crashers"}


def live_check(name: str) -> None:
    """One seed or saved finding on a harness of its own (the module's keeps running the
    others' inputs)."""
    data = LIVE_SEED.get(name) or LIVE_CRASHER[name]
    harness = fuzz_live.Harness(fuzz_live.PROFILES[data[0] & 3])
    harness.check(data)  # closes the harness when it raises
    harness.close()


def test_the_live_check_fails_without_the_rate_limit(monkeypatch):
    from tether.live import limits

    monkeypatch.setattr(limits.TokenBucket, "take", lambda self: True)
    with pytest.raises(AssertionError, match="rate_limited"):
        live_check("flood")


def test_the_live_check_fails_when_the_budget_closes_with_another_code(monkeypatch):
    from tether.live import connection

    def refused(self, error):
        self.send(connection.error_reply(error))
        if not self._errors.take():
            self.close(4005, "abuse")  # the heartbeat's code

    monkeypatch.setattr(connection.LiveConnection, "_refused", refused)
    with pytest.raises(AssertionError, match=r"closed with 4005 'abuse'; the doc allows \[4004\]"):
        live_check("errors-budget")


def test_the_live_check_fails_on_an_undocumented_error(monkeypatch):
    from tether.live import connection

    real = connection.error_reply
    monkeypatch.setattr(connection, "error_reply",
                        lambda error: real(error).replace('"not_joined"', '"not_a_member"'))
    with pytest.raises(AssertionError, match="undocumented error 410 not_a_member"):
        live_check("not-joined")


def test_the_live_check_fails_when_a_publish_reaches_nobody(monkeypatch):
    from tether.live import connection

    async def publish(self, command):
        self._joined(command)
        return {}

    monkeypatch.setattr(connection.LiveConnection, "_publish", publish)
    with pytest.raises(AssertionError, match="1 were published"):
        live_check("join-lobby-publish-leave")


def test_the_live_check_fails_when_the_observer_misses_a_leave(monkeypatch):
    from tether.live import endpoint

    real = endpoint.Live._presence_changed

    def changed(self, room, joined, left):
        if joined:
            real(self, room, joined, left)

    monkeypatch.setattr(endpoint.Live, "_presence_changed", changed)
    with pytest.raises(AssertionError, match="the observer sees"):
        live_check("client-close")


def test_the_live_check_fails_when_a_silent_client_is_not_closed(monkeypatch):
    from tether.live import endpoint

    async def heartbeat(self):
        return None

    monkeypatch.setattr(endpoint.Live, "_heartbeat", heartbeat)
    with pytest.raises(AssertionError, match=r"the doc wants a close with \[4005\]"):
        live_check("heartbeat")


def test_the_live_reader_check_fails_on_an_exception_out_of_read_command(monkeypatch):
    def read_command(text, settings):
        raise KeyError("reader bug")

    monkeypatch.setattr(fuzz_live.live_commands, "read_command", read_command)
    with pytest.raises(KeyError):
        fuzz_live.check(LIVE_SEED["reader"])


def test_the_live_check_fails_when_the_reader_takes_nan(monkeypatch):
    from tether.live import commands, connection

    def lenient(text, settings):  # json.loads as it is: NaN, Infinity and 1e400 pass
        message = json.loads(text)
        return commands.Command(message["op"], message.get("id"), message)

    monkeypatch.setattr(connection, "read_command", lenient)
    with pytest.raises(AssertionError, match="not JSON|the doc wants bad_request"):
        live_check("presence-info-NaN-sent-as-NaN")


def test_the_live_check_fails_when_commands_run_after_the_close(monkeypatch):
    from tether.live import connection
    from tether.tasks import spawn

    def close(self, code, reason):  # closes, but what the client sent meanwhile still runs
        spawn(self.websocket.close(code, reason))

    monkeypatch.setattr(connection.LiveConnection, "close", close)
    with pytest.raises(AssertionError, match=r"after the close \[4004\] was due"):
        live_check("commands-still-run-after-4004")
