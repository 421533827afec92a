"""`tether.live.jwt_authenticator`: JSON Web Tokens checked by PyJWT, their `exp` the
connection's expiry; without PyJWT it fails at once with the pip line."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import jwt

from tether import App
from tether.live import jwt_authenticator

from .test_live_protocol import peer, run

KEY = "a secret of the app, 32 bytes or more"


def token_app() -> App:
    app = App()
    live = app.live("/live")
    live.authenticate(jwt_authenticator(KEY, audience="chat"))

    @live.room("me")
    def me(conn: Any) -> Any:
        return {"user": conn.identity["sub"]}
    return app


def token(key: str = KEY, **claims: Any) -> str:
    return jwt.encode({"sub": "ann", "aud": "chat", "exp": int(time.time()) + 60, **claims}, key, algorithm="HS256")


def test_a_valid_token_gives_its_claims_and_its_expiry(serve_native: Any) -> None:
    server = serve_native(token_app())

    async def scenario() -> None:
        client = await peer(server, connect=False)
        assert 55 < (await client.result("connect", token=token()))["expires_in"] <= 60
        joined = await client.result("join", room="me")
        assert list(joined["presence"].values()) == [{"user": "ann"}]
        assert 0 < (await client.result("refresh", token=token(exp=int(time.time()) + 120)))["expires_in"] <= 120
    run(scenario())


def test_bad_tokens_are_refused_with_the_reason_and_expired_ones_with_4003(serve_native: Any) -> None:
    server = serve_native(token_app())

    async def scenario() -> None:
        for bad, reason in [(token("another key, also 32 bytes or longer"), "invalid token: Signature verification failed"),
                            (token(aud="bank"), "invalid token: Audience doesn't match"),
                            (None, "a token is needed"), ("not.a.jwt", "invalid token: ")]:
            client = await peer(server, connect=False)
            assert (await client.error("connect", token=bad))["message"].startswith(reason)
            code, _ = await client.closed()
            assert code == 4001
        expired = await peer(server, connect=False)
        assert (await expired.error("connect", token=token(exp=int(time.time()) - 5)))["message"] == "token expired"
        assert await expired.closed() == (4003, "token expired")
    run(scenario())


def test_without_pyjwt_it_fails_at_once_with_the_pip_line() -> None:
    code = ("import sys; sys.modules['jwt'] = None\n"
            "from tether.live import jwt_authenticator\n"
            "try:\n    jwt_authenticator('k')\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "tether.live.jwt_authenticator needs the PyJWT package: pip install 'tether[jwt]'"
