"""The demo chat, on live channels: open http://127.0.0.1:8000/ in two browser tabs.

Run from the repository root with `make run`, or here with `tether run app:app --port 8000`.
Alone it needs nothing else: the hub's local backplane keeps each room's history in the
process (a restart starts it afresh, and the pages say so). With
`TETHER_BACKPLANE=redis://127.0.0.1:6379/0` (and the redis extra: `pip install
'tether[redis]'`) the history lives in Redis: a server that restarts, or several servers on
one Redis, give a page back every message it missed.

The page (static/chat.js) logs in with a name at POST /login, which answers a signed token;
tether.js sends the token in its `connect` message and `authenticate` below turns it back
into the name: the connection's identity. A room `chat:<room>` keeps its last HISTORY
messages, tracks who is here (presence: `{"name": ...}` per connection) and takes its
members' messages, which `on_publish` checks and signs with the sender's name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time

from tether import App, FileResponse, JSONResponse
from tether.live import Authenticated, Refuse

app = App(__file__)
app.static("/static", "static")
live = app.live("/live")

HISTORY = 500          # messages kept per room (the page shows the last 50 on joining)
MAX_NAME = 32
MAX_TEXT = 1000        # characters of a message, after stripping spaces
ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")  # the page checks the same rule before joining
ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _"

# A DEMO login, not an authentication: anyone may take any name, and the token only proves
# that this server handed that name out (an HMAC of the name and an expiry, made with the
# standard library). A real app verifies a session or a JWT from its identity provider here.
# The page asks for a new token whenever it connects, so a restarted server with a new
# random secret is no trouble; servers behind one address must share CHAT_SECRET.
SECRET = os.environ.get("CHAT_SECRET", "").encode() or secrets.token_bytes(32)
TOKEN_LIFETIME = 3600  # seconds; tether.js asks for a new token before it runs out


def _sign(payload: bytes) -> str:
    return hmac.new(SECRET, payload, hashlib.sha256).hexdigest()


def make_token(name: str, lifetime: float = TOKEN_LIFETIME) -> str:
    """`<name, base64url>.<expiry, Unix seconds>.<HMAC-SHA256 of both, hex>`."""
    payload = f"{base64.urlsafe_b64encode(name.encode()).decode()}.{int(time.time() + lifetime)}"
    return f"{payload}.{_sign(payload.encode())}"


def read_token(token: str) -> tuple[str, int]:
    """(name, expiry) of a token this server made; ValueError otherwise."""
    payload, _, signature = token.rpartition(".")
    if not hmac.compare_digest(_sign(payload.encode()), signature):
        raise ValueError("bad signature")
    encoded, _, expires = payload.partition(".")
    return base64.urlsafe_b64decode(encoded.encode()).decode(), int(expires)


def clean_name(name: object) -> str:
    """A name as shown to others: stripped, 1 to MAX_NAME printable characters; else ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("type a name")
    name = name.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"a name is at most {MAX_NAME} printable characters")
    return name


@app.get("/")
def index():
    return FileResponse(f"{app.root}/static/index.html")


@app.post("/login")
async def login(request):
    """{"name": ...} -> {"name": the name as others will see it, "token": ...}; 400 {"error"}."""
    body = await request.json()
    try:
        name = clean_name(body.get("name") if isinstance(body, dict) else None)
    except ValueError as error:
        return JSONResponse({"error": str(error)}, 400)
    return {"name": name, "token": make_token(name)}


@live.authenticate
def who(token: str | None, websocket):
    if token is None:
        raise Refuse("log in first")
    try:
        name, expires = read_token(token)
    except ValueError:
        raise Refuse("not a token of this server (log in again)") from None
    return Authenticated(name, expires_at=expires)  # refused with "token expired" once it is past


@live.room("chat:{room}", history=HISTORY, presence=True, client_publish=True)
def chat(conn, room: str):
    if not ROOM.fullmatch(room):
        raise Refuse(ROOM_RULE)
    return {"name": conn.identity}  # this member's entry in everyone's online list


@live.on_publish("chat:{room}")
def check(conn, room: str, data):
    """A message is {"text": ...}: stripped, 1 to MAX_TEXT characters; sent as
    {"name": the sender's identity, "text": ...} (a client cannot speak for someone else)."""
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise Refuse('a message is {"text": "..."} with some text')
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise Refuse(f"a message is at most {MAX_TEXT} characters")
    return {"name": conn.identity, "text": text}
