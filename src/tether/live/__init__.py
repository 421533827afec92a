"""Live channels: rooms a client can leave and rejoin without losing a message.

`app.live(path, **settings)` mounts an endpoint (`Live`) that speaks the live protocol
(docs/live-protocol.md: subprotocol `tether.live.v1`) to `tether.js` in the browser and
`tether.client.connect` in Python. Hooks raise `Refuse(reason)` to say no; `authenticate`
returns an identity, or `Authenticated(identity, expires_at)` to state when it expires;
`jwt_authenticator(key)` is one for JSON Web Tokens (PyJWT: `pip install 'tether[jwt]'`).
"""

from .connection import Authenticated, LiveConnection
from .endpoint import Live
from .errors import SUBPROTOCOL, CloseCode, ErrorCode, Refuse
from .limits import LiveSettings
from .tokens import jwt_authenticator

__all__ = ["Live", "LiveConnection", "LiveSettings", "Authenticated", "Refuse", "ErrorCode", "CloseCode",
           "SUBPROTOCOL", "jwt_authenticator"]
