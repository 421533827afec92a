"""JSON Web Tokens for `live.authenticate`, verified by PyJWT (`pip install 'tether[jwt]'`).

`jwt_authenticator(key, algorithms=...)` makes the hook: the token's signature, and its
audience and issuer when given, are checked by PyJWT; the identity is the token's claims;
its `exp` claim becomes the connection's expiry (a token already expired is refused with
4003, so that a client fetches a new one; a connection that does not `refresh` in time is
closed with 4003).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..exceptions import MissingExtra
from .connection import Authenticated
from .errors import Refuse

__all__ = ["jwt_authenticator"]


def jwt_authenticator(key: Any, *, algorithms: Sequence[str] = ("HS256",), audience: str | None = None,
                      issuer: str | None = None, require: Sequence[str] = ("exp",)
                      ) -> Callable[[str | None, Any], Authenticated]:
    """An `authenticate` hook that accepts a JWT signed with `key` by one of `algorithms`
    (see the module doc), with the claims in `require` present; MissingExtra at once when
    PyJWT is not installed."""
    try:
        import jwt
    except ImportError:
        raise MissingExtra("tether.live.jwt_authenticator", "PyJWT", "jwt") from None
    options: Any = {"verify_exp": False, "require": list(require)}  # the expiry is the live layer's

    def authenticate(token: str | None, websocket: Any) -> Authenticated:
        if not token:
            raise Refuse("a token is needed")
        try:
            claims = jwt.decode(token, key, algorithms=list(algorithms), audience=audience, issuer=issuer,
                                options=options)
        except jwt.PyJWTError as exc:
            raise Refuse(f"invalid token: {exc}") from None
        expires_at = claims.get("exp")
        return Authenticated(claims, expires_at=float(expires_at) if expires_at is not None else None)
    return authenticate
