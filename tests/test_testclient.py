"""SPEC 4, `tether.testing.TestClient`: in process, no socket, never hangs."""

from __future__ import annotations

import time

import pytest

from tether import App, WebSocketDisconnect
from tether.testing import TestClient, WebSocketRejected


def make_app() -> App:
    app = App()
    app.state.events = []

    @app.on_startup
    def up():
        app.state.events.append("startup")

    @app.on_shutdown
    def down():
        app.state.events.append("shutdown")

    @app.get("/hello/{name}")
    def hello(name: str, punct: str = "!"):
        return f"hello {name}{punct}"

    @app.post("/json")
    async def echo(request):
        return {"got": await request.json()}

    @app.websocket("/echo", subprotocols=["v1"])
    async def echo_ws(websocket):
        async for message in websocket:
            await websocket.send(message)

    @app.websocket("/room/{name}")
    async def room(websocket, name: str, token: str):
        await websocket.send_text(f"joined {name}")
        async for message in websocket:
            await websocket.broadcast(message)

    @app.websocket("/bye")
    async def bye(websocket):
        await websocket.send_text("closing")
        await websocket.close(4000, "done")

    @app.websocket("/silent")
    async def silent(websocket):
        await websocket.receive_text()

    return app


def test_http_requests():
    app = make_app()
    with TestClient(app) as client:
        response = client.get("/hello/world", params={"punct": "?"})
        assert (response.status_code, response.text) == (200, "hello world?")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert client.post("/json", json={"a": 1}).json() == {"got": {"a": 1}}
        assert client.get("/missing").status_code == 404
        assert client.get("/echo").status_code == 426
    assert app.state.events == ["startup", "shutdown"]


def test_websocket_session_send_receive_all_types():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/echo", subprotocols=["v0", "v1"]) as ws:
            assert ws.subprotocol == "v1"
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
            ws.send_bytes(b"\x00")
            assert ws.receive_bytes() == b"\x00"
            ws.send_json({"k": [1]})
            assert ws.receive_json() == {"k": [1]}
            ws.send_json({"b": 2}, mode="binary")  # Starlette's TestClient modes
            assert ws.receive_json(mode="binary") == {"b": 2}
            ws.send_json([3])
            with pytest.raises(TypeError, match="expected a binary message"):
                ws.receive_json(mode="binary")
            ws.send_json({"t": 4})
            assert ws.receive_json(5) == {"t": 4}  # the timeout stays the first argument


def test_several_sessions_see_a_broadcast():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/room/a?token=t") as one, client.websocket_connect("/room/a?token=t") as two:
            assert one.receive_text() == "joined a" and two.receive_text() == "joined a"
            one.send_text("to all")
            assert one.receive_text() == "to all" and two.receive_text() == "to all"


def test_refused_handshake_raises_with_the_http_status():
    with TestClient(make_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/room/a")
        assert info.value.status_code == 400 and b"'token'" in info.value.body
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/nope")
        assert info.value.status_code == 404


def test_server_close_is_seen_with_its_code():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/bye") as ws:
            assert ws.receive_text() == "closing"
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert (info.value.code, info.value.reason) == (4000, "done")


def test_receive_times_out_instead_of_hanging():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/silent") as ws:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                ws.receive_text(timeout=0.2)
            assert time.monotonic() - start < 2


def test_message_over_the_limit_closes_with_1009():
    app = App(max_message_size=10)

    @app.websocket("/e")
    async def e(websocket):
        async for message in websocket:
            await websocket.send(message)

    with TestClient(app) as client:
        with client.websocket_connect("/e") as ws:
            ws.send_text("x" * 11)
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert info.value.code == 1009


# -- the real server stack: behaviour the in-memory road used to imitate (or could not) -------
import asyncio  # noqa: E402
import threading  # noqa: E402

from tether import Response, StreamingResponse  # noqa: E402


def test_messages_before_an_oversized_one_are_answered_then_1009_from_the_parser():
    app = App(max_message_size=10)
    seen = {}

    @app.websocket("/e")
    async def e(websocket):
        try:
            async for message in websocket:
                await websocket.send(message)
        finally:
            seen["code"] = websocket.close_code

    with TestClient(app) as client:
        with client.websocket_connect("/e") as ws:
            ws.send_text("x" * 10)  # exactly the limit: fine
            ws.send_bytes(b"y" * 11)  # one byte over, binary too
            assert ws.receive_text() == "x" * 10  # answered first: it came before the bad frame
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive()
            assert info.value.code == 1009 and "10-byte limit" in info.value.reason
    assert seen["code"] == 1009


def test_a_session_that_does_not_read_broadcasts_is_closed_with_1008():
    app = App(max_send_buffer=1000)
    codes = []

    @app.websocket("/sub")
    async def sub(websocket):
        try:
            async for _ in websocket:
                pass
        finally:
            codes.append(websocket.close_code)

    @app.post("/notify")
    async def notify(request):
        return {"delivered": await app.hub.broadcast("/sub", "x" * 300)}

    with TestClient(app) as client:
        with client.websocket_connect("/sub") as reader, client.websocket_connect("/sub") as lazy:
            for _ in range(8):
                assert client.post("/notify").status_code == 200
                assert reader.receive_text() == "x" * 300  # reads: its buffer stays empty
            received = 0
            with pytest.raises(WebSocketDisconnect) as info:
                while True:
                    assert lazy.receive_text() == "x" * 300
                    received += 1
            assert info.value.code == 1008 and "not reading" in info.value.reason
            assert 1 <= received < 8  # what was buffered before the limit still arrives
            reader.send_text("still here")
            assert client.post("/notify").json() == {"delivered": 1}
            assert reader.receive_text() == "x" * 300
    assert sorted(codes) == [1000, 1008]


def test_flow_control_holds_a_handler_back_until_the_test_reads():
    app = App()
    app.state.sent = 0

    @app.websocket("/flood")
    async def flood(websocket):
        for _ in range(200):
            await websocket.send_bytes(b"z" * 4096)  # 800 KiB in all
            app.state.sent += 1

    with TestClient(app) as client:
        with client.websocket_connect("/flood") as ws:
            time.sleep(0.3)
            assert app.state.sent < 60  # paused by the transport's high-water mark
            assert all(ws.receive_bytes() == b"z" * 4096 for _ in range(200))
            assert app.state.sent == 200
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive()
            assert info.value.code == 1000


def no_body_app() -> App:
    app = App()
    app.state.streamed = False

    @app.get("/page")
    def page():
        return "<p>hello</p>"

    @app.get("/stream")
    def stream():
        def chunks():
            app.state.streamed = True
            yield "a"
            yield "b"
        return StreamingResponse(chunks())

    @app.get("/empty")
    def empty():
        return Response(b"not sent", 204)

    @app.get("/cached")
    def cached():
        return Response(b"not sent either", 304, [("ETag", '"v1"')])

    return app


def test_a_head_response_has_no_body():
    app = no_body_app()
    with TestClient(app) as client:
        get, head = client.get("/page"), client.head("/page")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
        assert client.head("/stream").content == b""
        assert app.state.streamed is False  # the server did not run the body for a HEAD
        assert client.get("/stream").text == "ab" and app.state.streamed is True


def test_204_and_304_responses_have_no_body():
    with TestClient(no_body_app()) as client:
        empty = client.get("/empty")
        assert (empty.status_code, empty.content) == (204, b"")
        cached = client.get("/cached")
        assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", '"v1"')


def test_request_limits_are_the_servers():
    app = App(max_body_size=100, max_header_size=2048)

    @app.post("/upload")
    async def upload(request):
        return {"size": len(await request.body())}

    with TestClient(app) as client:
        assert client.post("/upload", content=b"x" * 100).json() == {"size": 100}
        too_big = client.post("/upload", content=b"x" * 101)
        assert too_big.status_code == 413 and "100 bytes" in too_big.text
        assert too_big.headers["connection"] == "close"
        assert client.post("/upload", headers={"x-big": "y" * 4000}).status_code == 431


def test_the_handshake_is_validated_by_the_server():
    with TestClient(make_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/echo", headers={"sec-websocket-version": "8"})
        assert info.value.status_code == 426 and info.value.headers["sec-websocket-version"] == "13"
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/echo", headers={"sec-websocket-key": "short"})
        assert info.value.status_code == 400
        with pytest.raises(WebSocketRejected) as info:  # Origin passed through to the app's check
            client.websocket_connect("/echo", headers={"origin": "https://evil.example"})
        assert info.value.status_code == 403
        with client.websocket_connect("/echo", headers={"origin": "http://testserver"}) as ws:
            assert ws.headers["upgrade"].lower() == "websocket" and ws.subprotocol is None
            ws.send_text("ok")
            assert ws.receive_text() == "ok"


def test_the_session_answers_keepalive_pings():
    app = App(ping_interval=0.05, ping_timeout=0.2)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    with TestClient(app) as client:
        with client.websocket_connect("/echo") as ws:
            for _ in range(5):  # ten ping intervals, two pong deadlines: answered while receiving
                with pytest.raises(TimeoutError):
                    ws.receive(timeout=0.1)
            ws.send_text("alive")
            assert ws.receive_text() == "alive"


def test_close_waits_for_the_handler_and_the_handler_sees_the_code():
    app = App()
    finished = []

    @app.websocket("/slow-close")
    async def slow_close(websocket):
        try:
            async for _ in websocket:
                pass
        finally:
            await asyncio.sleep(0.2)
            finished.append(websocket.close_code)

    with TestClient(app) as client:
        with client.websocket_connect("/slow-close") as ws:
            ws.close(4001, "test over")
            assert finished == [4001]
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive()
            assert info.value.code == 4001


def test_closing_the_client_drops_open_sessions():
    app = App()
    codes = []

    @app.websocket("/hold")
    async def hold(websocket):
        try:
            await websocket.receive()
        except WebSocketDisconnect as exc:
            codes.append(exc.code)

    client = TestClient(app)
    ws = client.websocket_connect("/hold")  # starts the client without `with`
    assert client.get("/nothing").status_code == 404
    client.close()
    assert codes == [1006]
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive(timeout=1)
    assert info.value.code == 1006


def test_sessions_on_several_threads():
    with TestClient(make_app()) as client:
        errors = []

        def talk(n: int) -> None:
            try:
                with client.websocket_connect("/echo") as ws:
                    for i in range(50):
                        ws.send_text(f"{n}:{i}")
                        assert ws.receive_text() == f"{n}:{i}"
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []


def test_requests_are_sent_as_written():
    app = App()

    @app.route("/inspect/{name}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def inspect(request, name: str):
        return {"method": request.method, "name": name, "query": dict(request.query_params),
                "cookies": request.cookies, "host": request.headers["host"],
                "x": request.headers.getlist("x-test"), "body": (await request.body()).decode(),
                "type": request.headers.get("content-type"), "client": list(request.client)}

    with TestClient(app) as client:
        got = client.get("/inspect/caf\u00e9?a=1", params={"b": "two words", "c": "\u00e9"},
                         cookies={"session": "abc"}, headers={"X-Test": "yes", "Host": "example.org"}).json()
        assert got == {"method": "GET", "name": "caf\u00e9", "query": {"a": "1", "b": "two words", "c": "\u00e9"},
                       "cookies": {"session": "abc"}, "host": "example.org", "x": ["yes"], "body": "",
                       "type": None, "client": ["testclient", 50000]}
        assert client.post("/inspect/f", data={"k": "v w"}).json()["body"] == "k=v+w"
        put = client.put("/inspect/p", content="raw text", headers={"content-type": "text/plain"}).json()
        assert (put["method"], put["body"], put["type"]) == ("PUT", "raw text", "text/plain")
        assert client.patch("/inspect/p", json=[1]).json()["type"] == "application/json"
        assert [client.request(m, "/inspect/m").json()["method"] for m in ("delete", "OPTIONS")] == ["DELETE", "OPTIONS"]
        assert client.get("http://testserver/inspect/absolute").json()["name"] == "absolute"


def test_usable_without_with():
    app = make_app()
    client = TestClient(app)
    assert client.get("/hello/you").text == "hello you!"  # starts it
    with client:  # entering a started client keeps it
        assert client.get("/hello/again").text == "hello again!"
    assert app.state.events == ["startup", "shutdown"]


def test_a_handler_that_reads_late_gets_every_message_in_order():
    app = App(max_queue=4)
    gate = threading.Event()

    @app.websocket("/late")
    async def late(websocket):
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
        received = [await websocket.receive_text() for _ in range(100)]
        await websocket.send_json(received)

    with TestClient(app) as client:
        with client.websocket_connect("/late") as ws:
            for i in range(100):  # past max_queue the server stops reading; the rest waits
                ws.send_text(str(i))
            gate.set()
            assert ws.receive_json() == [str(i) for i in range(100)]


def test_a_key_given_by_the_test_is_the_one_the_accept_is_checked_against():
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
    with TestClient(make_app()) as client:
        with client.websocket_connect("/echo", headers={"Sec-WebSocket-Key": key}) as ws:
            assert ws.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# -- a handler's exception is re-raised in the test (raise_server_exceptions) -----------------
from tether import GenericWebsocket, HTTPException  # noqa: E402


def failing_app() -> App:
    app = App()

    @app.get("/boom")
    def boom():
        raise ValueError("boom over HTTP")

    @app.get("/missing")
    def missing():
        raise HTTPException(404, "no such thing")

    @app.get("/typed")
    def typed(n: int):
        return {"n": n}

    @app.websocket("/after-one")
    async def after_one(websocket):
        await websocket.send_text("first")
        await websocket.receive_text()
        raise RuntimeError("boom after one message")

    @app.websocket("/at-once")
    async def at_once(websocket):
        await websocket.send_text("only")
        raise RuntimeError("boom at once")

    @app.websocket("/before-accept")
    class BeforeAccept(GenericWebsocket):
        async def connect(self):
            raise KeyError("boom before accept")

    @app.websocket("/needs-token")
    async def needs_token(websocket, token: str):
        await websocket.send_text(token)

    return app


def test_an_http_handlers_exception_is_raised_from_the_request():
    with TestClient(failing_app()) as client:
        with pytest.raises(ValueError, match="^boom over HTTP$") as info:
            client.get("/boom")
        assert type(info.value) is ValueError
        assert any(entry.name == "boom" for entry in info.traceback)  # the handler's own frames
        assert client.get("/typed?n=1").json() == {"n": 1}  # raised once: the client goes on


def test_without_raise_server_exceptions_the_test_sees_the_500():
    with TestClient(failing_app(), raise_server_exceptions=False) as client:
        response = client.get("/boom")
        assert (response.status_code, response.text) == (500, "Internal Server Error")


def test_answers_are_not_errors_http_exception_and_bad_params():
    with TestClient(failing_app(), raise_server_exceptions=True) as client:
        assert client.get("/missing").status_code == 404
        assert client.get("/typed?n=x").status_code == 400
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/needs-token")
        assert info.value.status_code == 400
    # nothing left over for close() to raise either


def test_a_websocket_handlers_exception_is_raised_from_the_receive_that_sees_the_1011():
    with TestClient(failing_app()) as client:
        with client.websocket_connect("/after-one") as ws:
            assert ws.receive_text() == "first"
            ws.send_text("go")
            with pytest.raises(RuntimeError, match="^boom after one message$"):
                ws.receive_text()
            with pytest.raises(WebSocketDisconnect) as info:  # once: then the close as it came
                ws.receive_text()
            assert info.value.code == 1011


def test_a_websocket_exception_the_test_never_receives_is_raised_from_close():
    with TestClient(failing_app()) as client:
        with pytest.raises(RuntimeError, match="^boom at once$"):
            with client.websocket_connect("/at-once") as ws:
                assert ws.receive_text() == "only"
        with pytest.raises(RuntimeError, match="^boom at once$"):
            ws = client.websocket_connect("/at-once")
            ws.close()
        ws.close()  # raised once


def test_an_exception_before_accept_is_raised_from_websocket_connect():
    with TestClient(failing_app()) as client:
        with pytest.raises(KeyError) as info:
            client.websocket_connect("/before-accept")
        assert info.value.args == ("boom before accept",)


def test_without_raise_server_exceptions_the_test_sees_1011_and_the_500_refusal():
    with TestClient(failing_app(), raise_server_exceptions=False) as client:
        with client.websocket_connect("/after-one") as ws:
            assert ws.receive_text() == "first"
            ws.send_text("go")
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert info.value.code == 1011
        with pytest.raises(WebSocketRejected) as rejected:
            client.websocket_connect("/before-accept")
        assert rejected.value.status_code == 500


def test_the_listener_lives_as_long_as_the_client():
    app = failing_app()
    client = TestClient(app)
    assert client.get("/typed?n=2").json() == {"n": 2}
    assert len(app._error_listeners) == 1
    client.close()
    assert app._error_listeners == []
    with TestClient(app, raise_server_exceptions=False) as quiet:
        assert quiet.get("/boom").status_code == 500
        assert app._error_listeners == []


def test_an_exception_no_call_re_raised_is_raised_from_the_clients_close():
    app = App()

    @app.websocket("/late")
    async def late(websocket):
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            raise LookupError("raised after the client went away") from None

    client = TestClient(app)
    client.websocket_connect("/late")  # never closed by the test
    with pytest.raises(LookupError, match="went away"):
        client.close()
    client.close()  # once


def test_an_absolute_url_names_the_host_and_port_the_app_sees():
    """As Starlette's TestClient: `ws://example.com:123/path` arrives with that Host."""
    app = App()

    @app.websocket("/where")
    async def where(websocket):
        await websocket.send_json({"host": websocket.url.hostname, "port": websocket.url.port})

    @app.get("/where")
    async def where_http(request):
        return {"host": request.headers["host"]}

    with TestClient(app) as client:
        with client.websocket_connect("ws://example.com:123/where") as ws:
            assert ws.receive_json() == {"host": "example.com", "port": 123}
        with client.websocket_connect("/where") as ws:
            assert ws.receive_json() == {"host": "testserver", "port": None}
        assert client.get("http://example.org/where").json() == {"host": "example.org"}
