"""One live connection: its identity and rooms, and the commands it runs.

`LiveConnection.run(text)` takes one client message and answers it (docs/live-protocol.md):
a command is read (`tether.live.commands`), counted against the connection's token bucket,
and run; what goes wrong becomes an error reply, and error replies spend the connection's
error budget, whose end closes it with 4004. The app's hooks are called here: a `Refuse`
they raise is the client's answer; anything else they raise is logged and answered with 500,
and the connection goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..backplane.history import Position
from ..params import call_maybe_async
from ..tasks import spawn
from .commands import Command, error_reply, position_json, read_command, reply
from .errors import CloseCode, CommandError, ErrorCode, Refuse
from .limits import LiveSettings, TokenBucket
from .rooms import Hook, LiveRoom

if TYPE_CHECKING:
    from ..patterns import RoomPatterns
    from ..websocket_connection import WebSocket

__all__ = ["LiveConnection", "Authenticated"]

logger = logging.getLogger("tether")

# A position past any room's last offset: a history read from it gives the position alone.
_THE_END = 2**62


class Authenticated:
    """What `authenticate` may return to state when the identity expires: `identity` (any
    value: `conn.identity`) and `expires_at` (Unix time in seconds, a JWT's `exp`). A
    connection that has not refreshed by then is closed with 4003."""

    __slots__ = ("identity", "expires_at")

    def __init__(self, identity: Any, expires_at: float | None = None) -> None:
        self.identity = identity
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"Authenticated({self.identity!r}, expires_at={self.expires_at!r})"


class _Expired(CommandError):
    """The token's identity expired already: a refused connect closes with 4003, not 4001."""


class LiveConnection:
    """A connection of a live endpoint, as the app's hooks see it: `id`, `identity`,
    `expires_at`, `rooms` (joined, by name) and `websocket` (the core connection: headers,
    cookies, client address)."""

    def __init__(self, websocket: WebSocket, settings: LiveSettings, rooms: RoomPatterns[LiveRoom],
                 authenticate: Hook | None) -> None:
        self.websocket = websocket
        self.id = websocket.id
        self.identity: Any = None
        self.expires_at: float | None = None
        self.rooms: dict[str, LiveRoom] = {}
        #: loop time of the last message heard from the client (the heartbeat reads it)
        self.heard = asyncio.get_running_loop().time()
        self._settings = settings
        self._declared = rooms
        self._authenticate_hook = authenticate
        self._commands = TokenBucket(settings.command_burst, settings.commands_per_second)
        self._errors = TokenBucket(settings.max_errors, 1.0)
        self._expiry: asyncio.TimerHandle | None = None
        self._closing = False  # a close is on its way: what the client sent meanwhile is not run
        self._handlers: dict[str, Callable[[Command], Awaitable[dict[str, Any]]]] = {
            "connect": self._connect_again, "join": self._join, "leave": self._leave, "publish": self._publish,
            "presence": self._presence, "history": self._history, "refresh": self._refresh,
        }

    # -- sending ----------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        """Queue a message for the client (nothing happens once it is closed)."""
        if not self.websocket.closed:
            self.websocket.send_nowait(text)

    def close(self, code: int, reason: str) -> None:
        """Close the connection soon (the session ends with it); nothing it sends from now
        on is run."""
        if not self._closing:
            self._closing = True
            spawn(self.websocket.close(code, reason))

    # -- the first command --------------------------------------------------------------------------
    async def connect(self, text: str) -> bool:
        """The first message, which must be `connect`: True once the connection is accepted;
        False when it was refused or misused (it is then closing)."""
        self.heard = asyncio.get_running_loop().time()
        try:
            command = read_command(text, self._settings)
        except CommandError as error:
            self.send(error_reply(error))
            self.close(CloseCode.PROTOCOL_MISUSE, f"the first command must be connect: {error.message}")
            return False
        if command.op != "connect":
            self.close(CloseCode.PROTOCOL_MISUSE, f"the first command must be connect, not {command.op[:40]!r}")
            return False
        try:
            result = await self._authenticate(command)
        except CommandError as error:
            self.send(error_reply(error))
            expired = isinstance(error, _Expired)
            self.close(CloseCode.TOKEN_EXPIRED if expired else CloseCode.UNAUTHORIZED, error.message)
            return False
        if command.id is not None:
            self.send(reply(command.id, {"client": self.id, "ping": self._settings.ping_interval, **result}))
        return True

    async def _authenticate(self, command: Command) -> dict[str, Any]:
        """Judge the command's token with the endpoint's `authenticate`: set the identity and
        its expiry; CommandError 401 when refused or already expired."""
        token = command.token()
        authenticate = self._authenticate_hook
        if authenticate is None:
            identity: Any = None
        else:
            try:
                identity = await call_maybe_async(authenticate, token, self.websocket)
            except Refuse as refused:
                raise command.fail(ErrorCode.UNAUTHORIZED, refused.reason) from None
            except Exception:
                logger.exception("live %s: authenticate raised", self.websocket.path)
                raise command.fail(ErrorCode.UNAUTHORIZED, "authentication failed (the server logged why)") from None
        expires_at = None
        if isinstance(identity, Authenticated):
            identity, expires_at = identity.identity, identity.expires_at
        expires_in = None if expires_at is None else expires_at - time.time()
        if expires_in is not None and expires_in <= 0:
            raise _Expired(ErrorCode.UNAUTHORIZED, "token expired", None, command.id)
        self.identity, self.expires_at = identity, expires_at
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires_in is not None:
            self._expiry = asyncio.get_running_loop().call_later(expires_in, self._expired)
        return {"expires_in": expires_in}

    def _expired(self) -> None:
        self._expiry = None
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def ended(self) -> None:
        """The connection closed: stop its expiry timer (the hub took it out of its rooms)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # -- every later command --------------------------------------------------------------------------
    async def run(self, text: str) -> None:
        """Answer one client message (see the module doc)."""
        if self._closing:
            return
        self.heard = asyncio.get_running_loop().time()
        command_id = None
        try:
            command = read_command(text, self._settings)
            command_id = command.id
            if command.op == "pong":
                return
            if not self._commands.take():
                raise command.fail(ErrorCode.RATE_LIMITED, f"over {self._settings.commands_per_second:g} commands "
                                   "per second", "commands_per_second")
            handler = self._handlers.get(command.op)
            if handler is None:
                raise command.fail(ErrorCode.UNKNOWN_OP, f"unknown op {command.op[:40]!r}")
            result = await handler(command)
        except CommandError as error:
            self._refused(error)
            return
        except ConnectionError as exc:  # the backplane (a history or presence read) is down
            logger.warning("live %s: %s could not be answered: %s", self.websocket.path, command.op, exc)
            self._refused(CommandError(ErrorCode.UNAVAILABLE, f"the backplane is unreachable ({exc}); try again",
                                       None, command_id))
            return
        except Exception:
            logger.exception("live %s: a hook failed", self.websocket.path)
            self._refused(CommandError(ErrorCode.INTERNAL, "the server failed (it logged why)", None, command_id))
            return
        if command_id is not None:
            self.send(reply(command_id, result))

    def _refused(self, error: CommandError) -> None:
        """Send an error reply; close with 4004 when the error budget is spent."""
        self.send(error_reply(error))
        if not self._errors.take():
            self.close(CloseCode.ABUSE, f"too many errors ({error.error.wire_name} last)")

    async def _hook(self, command: Command, hook: Hook, **params: Any) -> Any:
        """Call an app's room hook; its Refuse becomes the command's 403 error reply."""
        try:
            return await call_maybe_async(hook, self, **params)
        except Refuse as refusal:
            raise command.fail(ErrorCode.FORBIDDEN, refusal.reason) from None

    def _joined(self, command: Command) -> tuple[str, LiveRoom]:
        room = command.room(self._settings)
        declared = self.rooms.get(room)
        if declared is None:
            raise command.fail(ErrorCode.NOT_JOINED, f"{command.op}: room {room!r} is not joined")
        return room, declared

    async def _connect_again(self, command: Command) -> dict[str, Any]:
        raise command.fail(ErrorCode.ALREADY_CONNECTED, "connect: this connection is connected already")

    async def _refresh(self, command: Command) -> dict[str, Any]:
        return await self._authenticate(command)

    async def _join(self, command: Command) -> dict[str, Any]:
        settings = self._settings
        room = command.room(settings)
        if room in self.rooms:
            raise command.fail(ErrorCode.ALREADY_JOINED, f"join: room {room!r} is joined already")
        if len(self.rooms) >= settings.max_rooms:
            raise command.fail(ErrorCode.TOO_MANY_ROOMS, f"join: {settings.max_rooms} rooms are joined already",
                               "max_rooms")
        found = self._declared.match(room)
        if found is None:
            raise command.fail(ErrorCode.UNKNOWN_ROOM, f"join: no room is declared for {room!r}")
        declared, params = found
        info, since = command.info(settings), command.since()
        if declared.authorize is not None:
            given = await self._hook(command, declared.authorize, **params)
            if given is not None:
                info = given
        if not declared.presence:
            info = None
        self.rooms[room] = declared
        try:
            return await self._enter(room, declared, info, since)
        except BaseException:
            del self.rooms[room]
            await self.websocket.leave(room)
            raise

    async def _enter(self, room: str, declared: LiveRoom, info: Any, since: Position | None) -> dict[str, Any]:
        """Join the hub's room (from `since` in a room with history) and say how it went."""
        hub = self.websocket.hub
        position: Position | None = None
        recovered = False
        if not declared.keeps_history:
            await self.websocket.join(room, info)
        elif since is not None:
            recovery = await self.websocket.join(room, info, since=since)
            assert recovery is not None
            recovered, position = recovery.recovered, recovery.position
        else:
            await self.websocket.join(room, info)
            position, _ = await hub.history(room, since=_THE_END, limit=0)
        result: dict[str, Any] = {"recovered": recovered, "position": position_json(position)}
        if declared.presence:
            result["presence"] = await hub.presence(room)
        return result

    async def _leave(self, command: Command) -> dict[str, Any]:
        room, _ = self._joined(command)
        del self.rooms[room]
        await self.websocket.leave(room)
        return {}

    async def _publish(self, command: Command) -> dict[str, Any]:
        room, declared = self._joined(command)
        if not declared.client_publish:
            raise command.fail(ErrorCode.FORBIDDEN, f"publish: clients may not publish into room {room!r}")
        if "data" not in command.fields:
            raise command.fail(ErrorCode.BAD_REQUEST, "publish: 'data' is missing")
        data = command.fields["data"]
        if declared.check_publish is not None:
            found = self._declared.match(room)
            assert found is not None
            data = await self._hook(command, declared.check_publish, **found[1], data=data)
        await self.websocket.hub.publish(room, data)
        return {}

    async def _presence(self, command: Command) -> dict[str, Any]:
        room, declared = self._joined(command)
        if not declared.presence:
            raise command.fail(ErrorCode.NO_PRESENCE, f"presence: room {room!r} keeps no presence")
        return {"presence": await self.websocket.hub.presence(room)}

    async def _history(self, command: Command) -> dict[str, Any]:
        room, declared = self._joined(command)
        if not declared.keeps_history:
            raise command.fail(ErrorCode.NO_HISTORY, f"history: room {room!r} keeps no history")
        since, limit = command.offset("since"), command.offset("limit")
        position, kept = await self.websocket.hub.history(room, since=since, limit=limit)
        messages = [{"offset": message.offset, "data": json.loads(message.data)} for message in kept]
        return {"position": position_json(position), "messages": messages}

