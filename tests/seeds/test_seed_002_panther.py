"""Every example of Panther's WebSocket page (shared/seeds/002_20c4bea7570a2205.txt) on
tether, with only the import lines changed (`from panther.websocket import ...` and
`from panther import status` become `from tether import ...`), driven by real clients.
Redis across workers (the page's item 8) belongs to the backplane and is not tested here.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.netutil import wait_until
from tether import App, GenericWebsocket, close_websocket_connection, send_message_to_websocket, status


class BookWebsocket(GenericWebsocket):
    async def connect(self):
        await self.accept()
        print(f'{self.connection_id=}')

    async def receive(self, data: str | bytes):
        # Just Echo The Message
        await self.send(data=data)


class UserWebsocket(GenericWebsocket):
    async def connect(self, user_id: int, room_id: str):
        await self.accept()


urls = {
    'ws/book/': BookWebsocket,
}

url = {
    '/ws/<user_id>/<room_id>/': UserWebsocket
}


SERVERS = ("native", "uvicorn", "hypercorn", "granian")  # every road in

def test_book_websocket_echoes_and_prints_its_connection_id(serve, capsys):
    server = serve(App(urls=urls))
    for path in ("/ws/book/", "/ws/book"):  # the trailing slash is optional
        with connect(server.ws_url(path)) as ws:
            ws.send("a book")
            assert ws.recv() == "a book"
            ws.send(b"\x00bytes")
            assert ws.recv() == b"\x00bytes"
    out = capsys.readouterr().out
    assert out.count("self.connection_id=") == 2


def test_send_message_to_websocket_from_an_http_route_and_a_background_task(serve):
    app = App(urls=urls)

    @app.post("/push/{connection_id}")
    async def push(connection_id: str):
        await send_message_to_websocket(connection_id=connection_id, data='New Message From WS')
        asyncio.get_running_loop().create_task(
            send_message_to_websocket(connection_id=connection_id, data={"from": "background"}))
        return "pushed"

    server = serve(app)
    with connect(server.ws_url("/ws/book/")) as ws:
        connection_id = wait_until(app.hub.ids, message="the connection in the hub")[0]
        import urllib.request
        request = urllib.request.Request(server.url(f"/push/{connection_id}"), data=b"", method="POST")
        assert urllib.request.urlopen(request).read() == b"pushed"
        assert ws.recv() == "New Message From WS"
        assert ws.recv() == '{"from":"background"}'


def test_self_close_with_a_status_code_and_reason(serve):
    class ClosingWebsocket(GenericWebsocket):
        async def connect(self):
            await self.accept()

        async def receive(self, data: str | bytes):
            await self.close(code=status.WS_1000_NORMAL_CLOSURE, reason='I just want to close it')

    server = serve(App(urls={"/closing": ClosingWebsocket}))
    with connect(server.ws_url("/closing")) as ws:
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1000, "I just want to close it")


def test_close_websocket_connection_from_outside(serve):
    app = App(urls=urls)
    server = serve(app)
    with connect(server.ws_url("/ws/book/")) as ws:
        connection_id = wait_until(app.hub.ids, message="the connection in the hub")[0]
        assert server.call(close_websocket_connection(
            connection_id=connection_id, code=status.WS_1008_POLICY_VIOLATION, reason='')) is True
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1008
    assert server.call(send_message_to_websocket(connection_id="no-such-id", data="x")) is False


def test_path_variables_are_passed_to_connect_coerced(serve):
    seen = {}

    class Recording(UserWebsocket):
        async def connect(self, user_id: int, room_id: str):
            seen.update(user_id=user_id, room_id=room_id)
            await self.accept()

    server = serve(App(urls={'/ws/<user_id>/<room_id>/': Recording}))
    with connect(server.ws_url("/ws/42/batcave/")):
        pass
    assert seen == {"user_id": 42, "room_id": "batcave"}
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/ws/not-a-number/batcave/"))
    assert info.value.response.status_code == 400 and b"user_id" in info.value.response.body


def test_the_page_url_mapping_works_as_written(serve):
    server = serve(App(urls=url))
    with connect(server.ws_url("/ws/7/lobby/")) as ws:
        ws.send("anything")  # UserWebsocket does not echo: nothing comes back
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)


def test_not_accepting_in_connect_rejects_with_403(serve):
    class Picky(GenericWebsocket):
        async def connect(self):
            if self.headers.get("x-token") == "secret":
                await self.accept()

    server = serve(App(urls={"/picky": Picky}))
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/picky"))
    assert info.value.response.status_code == 403
    with connect(server.ws_url("/picky"), additional_headers={"X-Token": "secret"}):
        pass


def test_disconnect_hook_gets_the_close_code(serve, server_kind):
    codes = []

    class Watched(BookWebsocket):
        async def disconnect(self, code: int, reason: str):
            codes.append((code, reason))

    server = serve(App(urls={"/watched": Watched}))
    with connect(server.ws_url("/watched")) as ws:
        ws.close(4005, "gone")
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    # What the app learns of a client's close depends on the ASGI server (docs/deploy.md):
    # hypercorn reports 1006 without the client's code, granian drops the reason.
    expected = {"hypercorn": (1006, ""), "granian": (4005, "")}.get(server_kind, (4005, "gone"))
    assert codes == [expected]


def test_class_registered_with_the_decorator_and_bad_classes_are_refused():
    app = App()

    @app.websocket("/decorated")
    class Decorated(GenericWebsocket):
        pass

    assert Decorated.__name__ == "Decorated"  # the class itself stays the name's value
    with pytest.raises(TypeError, match="not a GenericWebsocket subclass"):
        App(urls={"/x": object})


def test_status_codes():
    assert status.WS_1000_NORMAL_CLOSURE == 1000 and status.WS_1014_BAD_GATEWAY == 1014
    assert status.HTTP_200_OK == 200 and status.HTTP_404_NOT_FOUND == 404


# -- beyond the page: what Panther's users also write ---------------------------------------------
def test_send_takes_the_query_params_and_headers_objects(serve):
    """The page says `data` "can have any type": the request's own mappings included (they
    were a 1011 "not JSON serializable")."""

    class Mirror(GenericWebsocket):
        async def receive(self, data: str | bytes):
            await self.send(self.query_params)
            await self.send(data=self.headers)

    app = App()
    app.websocket("/mirror")(Mirror)
    server = serve(app)
    with connect(server.ws_url("/mirror?a=1&b=two"), additional_headers={"X-Token": "t"}) as ws:
        ws.send("go")
        assert json.loads(ws.recv(timeout=5)) == {"a": "1", "b": "two"}
        assert json.loads(ws.recv(timeout=5))["x-token"] == "t"


@pytest.mark.parametrize("attributes", [{"auth": True}, {"permissions": [object]},
                                        {"auth": True, "permissions": [object]}])
def test_auth_and_permissions_are_refused_at_registration_not_ignored(attributes):
    """A class meant to refuse unauthenticated users must not silently let them in."""
    secured = type("Secured", (GenericWebsocket,), attributes)
    for register in (lambda: App().websocket("/secure")(secured), lambda: App(urls={"/secure": secured})):
        with pytest.raises(TypeError, match=r"route '/secure': Secured sets .*(auth|permissions).* connect\(\)"):
            register()


def test_auth_false_and_empty_permissions_are_fine_and_user_is_none(serve):
    class Open(GenericWebsocket):
        auth = False
        permissions: list = []

        async def connect(self):
            await self.accept()
            await self.send(str(self.user))  # Panther's test_without_auth: None without authentication

        async def receive(self, data: str | bytes):
            await self.send(data)

    app = App()
    app.websocket("/open")(Open)
    server = serve(app)
    with connect(server.ws_url("/open")) as ws:
        assert ws.recv(timeout=5) == "None"
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
