"""SPEC 3, HTTP, over real sockets with a real client (aiohttp)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import tether
from tether import (
    App,
    EventSourceResponse,
    FileResponse,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    Request,
    Response,
    Router,
    StreamingResponse,
    jsonify,
)


def fetch(url: str, method: str = "GET", **kwargs) -> tuple[int, dict, bytes]:
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, allow_redirects=False, **kwargs) as response:
                return response.status, response.headers.copy(), await response.read()  # case-insensitive
    return asyncio.run(go())


@pytest.fixture
def site(serve, tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "hello.txt").write_text("static hello")
    (tmp_path / "static" / "index.html").write_text("<h1>index</h1>")
    (tmp_path / "secret.txt").write_text("secret")
    app = App(str(tmp_path / "main.py"))

    @app.get("/text")
    def text():
        return "plain"

    @app.get("/html")
    def html():
        return "<p>hi</p>"

    @app.get("/json")
    async def json_route():
        return {"a": [1, 2]}

    @app.get("/list")
    def list_route():
        return [1, "two"]

    @app.get("/jsonify")
    def jsonify_route():
        return jsonify({"j": 1})

    @app.get("/bytes")
    def bytes_route():
        return b"\x00\x01"

    @app.get("/none")
    def none_route():
        return None

    @app.get("/custom")
    def custom():
        response = Response("made", status_code=201, headers={"X-Made": "yes"}, media_type="text/plain")
        response.set_cookie("session", "abc", httponly=True)
        return response

    @app.get("/typed/{item_id:int}")
    def typed(item_id: int, q: str = "none", flag: bool = False):
        return {"item_id": item_id, "q": q, "flag": flag}

    @app.get("/flask/<int:n>/<name>")
    def flask_style(n: int, name: str):
        return {"n": n, "name": name}

    @app.get("/express/:slug")
    def express_style(slug: str):
        return slug

    @app.route("/multi", methods=["GET", "POST"])
    async def multi(request: Request):
        return {"method": request.method, "body": (await request.body()).decode()}

    @app.post("/echo-json")
    async def echo_json(request: Request):
        return await request.json()

    @app.post("/form")
    async def form(request):
        fields = await request.form()
        return {name: value if isinstance(value, str) else {"filename": value["filename"], "size": len(value["content"])}
                for name, value in fields.items()}

    @app.put("/put")
    def put():
        return "put"

    @app.patch("/patch")
    def patch():
        return "patch"

    @app.delete("/delete")
    def delete():
        return "delete"

    @app.get("/request-info")
    def info(request: Request):
        return {"path": request.path, "q": request.query_params.getlist("q"), "args": request.args.get("q"),
                "cookie": request.cookies.get("c"), "header": request.headers.get("x-h")}

    @app.get("/raise")
    def raise_http():
        raise HTTPException(418, "I'm a teapot, really")

    @app.get("/crash")
    def crash():
        raise RuntimeError("unexpected")

    class Custom(Exception):
        pass

    @app.exception_handler(Custom)
    def handle_custom(request, exc):
        return JSONResponse({"handled": str(exc)}, status_code=409)

    @app.get("/custom-error")
    def custom_error():
        raise Custom("nope")

    @app.get("/stream")
    def stream():
        async def chunks():
            for i in range(3):
                yield f"part{i};"
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/sse")
    def sse():
        async def events():
            yield "hello"
            yield {"event": "update", "id": 2, "data": {"x": 1}}
            yield {"data": "two\nlines"}
        return EventSourceResponse(events())

    @app.get("/file")
    def file():
        return FileResponse(tmp_path / "static" / "hello.txt", filename="greeting.txt")

    @app.get("/page")
    def page():
        return HTMLResponse("<b>x</b>")

    @app.get("/html-helper")
    def html_helper():
        return tether.html("<p>hi</p>")

    @app.get("/echo-markup")
    def echo_markup(q: str):
        return q

    @app.websocket("/ws-only")
    async def ws_only(websocket):
        pass

    api = Router(prefix="/api")

    @api.get("/users/{uid}")
    def user(uid: int):
        return {"uid": uid}

    @api.websocket("/live")
    async def live(websocket):
        await websocket.send_text("live")

    app.include_router(api)
    app.static("/static", "static")

    @app.before_request()
    def guard(request):
        if request.headers.get("x-block"):
            return Response("blocked", status_code=403)
        return None  # go on to the route

    @app.after_request
    def tag(response):
        response.headers.append(("X-After", "1"))
        return response

    return serve(app)


def test_an_echoed_script_is_served_as_text_not_html(site):
    _, headers, body = fetch(site.url("/echo-markup?q=%3Cscript%3Ealert(1)%3C/script%3E"))
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == b"<script>alert(1)</script>"


@pytest.mark.parametrize("path, status, content_type, body", [
    ("/text", 200, "text/plain; charset=utf-8", b"plain"),
    # a str is text/plain even when it looks like markup: an echo of user input is not a page
    ("/html", 200, "text/plain; charset=utf-8", b"<p>hi</p>"),
    ("/html-helper", 200, "text/html; charset=utf-8", b"<p>hi</p>"),
    ("/json", 200, "application/json", b'{"a":[1,2]}'),
    ("/list", 200, "application/json", b'[1,"two"]'),
    ("/jsonify", 200, "application/json", b'{"j":1}'),
    ("/bytes", 200, "application/octet-stream", b"\x00\x01"),
    ("/page", 200, "text/html; charset=utf-8", b"<b>x</b>"),
])
def test_return_values_become_responses(site, path, status, content_type, body):
    got_status, headers, got_body = fetch(site.url(path))
    assert (got_status, headers["Content-Type"], got_body) == (status, content_type, body)


def test_none_is_204_and_custom_responses_keep_status_headers_and_cookies(site):
    assert fetch(site.url("/none"))[0] == 204
    status, headers, body = fetch(site.url("/custom"))
    assert status == 201 and headers["X-Made"] == "yes" and body == b"made"
    assert headers["Set-Cookie"].startswith("session=abc; Path=/") and "HttpOnly" in headers["Set-Cookie"]


@pytest.mark.parametrize("path, expected", [
    ("/typed/7?q=x&flag=true", b'{"item_id":7,"q":"x","flag":true}'),
    ("/typed/7", b'{"item_id":7,"q":"none","flag":false}'),
    ("/typed/7/", b'{"item_id":7,"q":"none","flag":false}'),
    ("/flask/3/bob", b'{"n":3,"name":"bob"}'),
    ("/express/my-post", b"my-post"),
    ("/api/users/5", b'{"uid":5}'),
])
def test_every_path_syntax_and_typed_parameters(site, path, expected):
    assert fetch(site.url(path))[2] == expected


@pytest.mark.parametrize("path, method, status, needle", [
    ("/typed/abc", "GET", 404, b"Not Found"),
    ("/typed/7?flag=perhaps", "GET", 400, b"'flag'"),
    ("/nowhere", "GET", 404, b"Not Found"),
    ("/put", "GET", 405, b"Method Not Allowed"),
    ("/ws-only", "GET", 426, b"WebSocket"),
    ("/raise", "GET", 418, b"I'm a teapot, really"),
    ("/crash", "GET", 500, b"Internal Server Error"),
    ("/custom-error", "GET", 409, b'{"handled":"nope"}'),
    ("/echo-json", "POST", 400, b"not valid JSON"),
])
def test_errors_have_precise_statuses(site, path, method, status, needle):
    got, headers, body = fetch(site.url(path), method, data=b"{broken")
    assert got == status and needle in body
    if status == 405:
        assert headers["Allow"] == "PUT"


def test_methods_bodies_json_and_forms(site):
    assert fetch(site.url("/multi"), "POST", data=b"payload")[2] == b'{"method":"POST","body":"payload"}'
    assert fetch(site.url("/echo-json"), "POST", json={"k": [1]})[2] == b'{"k":[1]}'
    assert fetch(site.url("/form"), "POST", data={"a": "1", "b": "two"})[2] == b'{"a":"1","b":"two"}'
    multipart = aiohttp.FormData()
    multipart.add_field("field", "value")
    multipart.add_field("upload", b"filedata", filename="f.bin", content_type="application/octet-stream")
    body = fetch(site.url("/form"), "POST", data=multipart)[2]
    assert body == b'{"field":"value","upload":{"filename":"f.bin","size":8}}'
    for verb in ("put", "patch", "delete"):
        assert fetch(site.url(f"/{verb}"), verb.upper())[2] == verb.encode()


def test_head_has_headers_but_no_body(site):
    status, headers, body = fetch(site.url("/text"), "HEAD")
    assert status == 200 and headers["Content-Length"] == "5" and body == b""


def test_request_attributes(site):
    _, _, body = fetch(site.url("/request-info?q=1&q=2"), headers={"X-H": "v", "Cookie": "c=cookie"})
    assert body == b'{"path":"/request-info","q":["1","2"],"args":"2","cookie":"cookie","header":"v"}'


def test_streaming_sse_and_files(site):
    status, headers, body = fetch(site.url("/stream"))
    assert headers["Transfer-Encoding"] == "chunked" and body == b"part0;part1;part2;"
    status, headers, body = fetch(site.url("/sse"))
    assert headers["Content-Type"].startswith("text/event-stream") and headers["Cache-Control"] == "no-cache"
    assert body == b'data: hello\n\nevent: update\nid: 2\ndata: {"x":1}\n\ndata: two\ndata: lines\n\n'
    status, headers, body = fetch(site.url("/file"))
    assert body == b"static hello" and "greeting.txt" in headers["Content-Disposition"]


def test_static_files_and_traversal(site):
    assert fetch(site.url("/static/hello.txt"))[2] == b"static hello"
    assert fetch(site.url("/static/"))[2] == b"<h1>index</h1>"
    assert fetch(site.url("/static/missing.txt"))[0] == 404
    assert fetch(site.url("/static/..%2Fsecret.txt"))[0] == 404
    assert fetch(site.url("/static/%2E%2E/secret.txt"))[0] == 404


def test_hooks(site):
    status, headers, body = fetch(site.url("/text"), headers={"X-Block": "1"})
    assert (status, body) == (403, b"blocked") and headers["X-After"] == "1"
    assert fetch(site.url("/text"))[1]["X-After"] == "1"


def test_subrouter_websocket_route(site):
    from websockets.sync.client import connect

    with connect(site.ws_url("/api/live")) as ws:
        assert ws.recv() == "live"


def test_startup_and_shutdown_hooks_run(serve):
    events = []
    app = App()

    @app.on_startup
    async def up():
        events.append("startup")

    @app.on_event("shutdown")
    def down():
        events.append("shutdown")

    server = serve(app)
    assert events == ["startup"]
    server.stop()
    assert events == ["startup", "shutdown"]


def test_registration_errors_name_the_problem():
    app = App()
    with pytest.raises(ValueError, match="unknown converter 'bogus'"):
        app.get("/x/{a:bogus}")(lambda a: a)
    with pytest.raises(ValueError, match="unknown HTTP method"):
        app.route("/x", methods=["FETCH"])(lambda: 1)
    with pytest.raises(TypeError, match="must accept 1 positional"):
        app.websocket("/w")(lambda: None)
    with pytest.raises(TypeError, match="unknown setting"):
        App(max_mesage_size=1)
    with pytest.raises(ValueError, match="max_queue"):
        App(max_queue=0)


def test_a_stream_that_fails_midway_ends_that_response_only(serve, caplog):
    app = App()

    @app.get("/broken")
    def broken():
        async def chunks():
            yield "first;"
            raise RuntimeError("the data source went away")
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/ok")
    def ok():
        return "still serving"

    server = serve(app)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.get(server.url("/broken"), timeout=aiohttp.ClientTimeout(total=5)) as response:
                    await response.read()
            async with session.get(server.url("/ok")) as response:
                return await response.read()

    assert asyncio.run(scenario()) == b"still serving"
    assert any("the data source went away" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_a_header_holding_cr_or_lf_is_never_written_so_the_response_cannot_be_split(serve_native, caplog):
    """A header value taken from the request (here the query string) with CR LF in it would
    end the head and make the rest a header of the attacker's choosing."""
    import socket
    from urllib.parse import quote

    app = App()

    @app.get("/greet")
    def greet(name: str):
        return Response("hi", headers={"X-Name": name})

    server = serve_native(app)
    target = "/greet?name=" + quote("x\r\nSet-Cookie: admin=1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"Set-Cookie" not in received and b"admin=1" not in received
    assert any("holds a CR, LF or NUL" in (r.exc_text or r.getMessage()) for r in caplog.records)
    status, _, body = fetch(server.url("/greet?name=plain"))
    assert (status, body) == (200, b"hi")  # the server goes on
