"""An optional feature whose extra is not installed fails at startup, loudly: `tether run` exits
with status 1 and one line on stderr naming the pip command that installs it; `app.startup()`
(the TestClient, the ASGI lifespan) raises `MissingExtra` with that line; nothing is retried.

"Not installed" is real in the processes these tests start: a sitecustomize on their
PYTHONPATH puts, in place of the path finder, one that does not see the packages named in
$TETHER_TEST_NOT_INSTALLED, so that `import redis` raises ModuleNotFoundError and
`importlib.util.find_spec("redis")` is None there, as in an environment without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tether.exceptions import MissingExtra, TetherError

from .netutil import reserve_port
from .redisutil import RedisServer, redis_server_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
REDIS = "the Redis backplane needs the redis package: pip install 'tether[redis]'"
METRICS = "metrics_path needs the prometheus_client package: pip install 'tether[metrics]'"
FUZZ = "fuzz: the fuzz targets need the atheris package: pip install 'tether[fuzz]'"

NOT_INSTALLED = '''
import os
import sys
from importlib.machinery import PathFinder

HIDDEN = frozenset(os.environ["TETHER_TEST_NOT_INSTALLED"].split(","))


class NotInstalled(PathFinder):
    """The path finder, blind to the packages in HIDDEN (and their submodules)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[sys.meta_path.index(PathFinder)] = NotInstalled
'''


def run_without(packages: list[str], argv: list[str], cwd: Path, extra_env: dict[str, str] | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python *argv` in `cwd` where `packages` are not installed; a process still running
    after `timeout` seconds (serving, retrying) fails the test."""
    prelude = cwd / "not-installed"
    prelude.mkdir(exist_ok=True)
    (prelude / "sitecustomize.py").write_text(NOT_INSTALLED)
    env = {key: value for key, value in os.environ.items() if key != "TETHER_BACKPLANE"}
    env.update({"PYTHONPATH": str(prelude), "TETHER_TEST_NOT_INSTALLED": ",".join(packages)}, **(extra_env or {}))
    try:
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{argv} still running after {timeout} s; stderr so far:\n{exc.stderr!r}") from None


def tether_run(packages: list[str], cwd: Path, app: str, *flags: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tether run app:app FLAGS` on a free port in `cwd`, whose app.py is `app`."""
    (cwd / "app.py").write_text(textwrap.dedent(app))
    return run_without(packages, ["-m", "tether", "run", "app:app", "--port", str(reserve_port()), *flags], cwd,
                       env)


def assert_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.splitlines() == [line], result.stderr


def test_a_hidden_package_is_not_installed_in_the_subprocess(tmp_path):
    code = textwrap.dedent("""
        import importlib.util
        try:
            import redis.asyncio
        except ModuleNotFoundError as exc:
            print(exc.name, importlib.util.find_spec("redis"), importlib.util.find_spec("websockets") is not None)
    """)
    result = run_without(["redis"], ["-c", code], tmp_path)
    assert result.stdout.split() == ["redis", "None", "True"], result.stderr


def test_missing_extra_is_an_import_error_of_the_family_naming_the_package_and_the_extra():
    exc = MissingExtra("the Redis backplane", "redis", "redis")
    assert isinstance(exc, TetherError) and isinstance(exc, ImportError)
    assert (str(exc), exc.name, exc.extra) == (REDIS, "redis", "redis")


# -- redis: the backplane --------------------------------------------------------------------------
def backplane_urls(server: RedisServer) -> dict[str, str]:
    """A URL of each Redis scheme for `server` (which is up: what is missing is the package)."""
    return {"redis": server.url, "unix": server.unix_url, "rediss": f"rediss://{server.host}:{server.port}/0"}


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
@pytest.mark.parametrize("given_by", ["--backplane", "TETHER_BACKPLANE", "App(backplane=...)", "--workers 2"])
def test_tether_run_with_a_redis_backplane_and_no_redis_package_exits_with_the_pip_line(
        tmp_path, redis_server, scheme, given_by):
    url = backplane_urls(redis_server)[scheme]
    app, flags, env = "from tether import App\napp = App()\n", [], {}
    if given_by == "--backplane":
        flags = ["--backplane", url]
    elif given_by == "--workers 2":
        flags = ["--backplane", url, "--workers", "2"]
    elif given_by == "TETHER_BACKPLANE":
        env = {"TETHER_BACKPLANE": url}
    else:
        app = f"from tether import App\napp = App(backplane={url!r})\n"
    assert_one_line(tether_run(["redis"], tmp_path, app, *flags, env=env), f"tether: {REDIS}")


def test_app_run_with_a_redis_backplane_and_no_redis_package_exits_with_the_pip_line(tmp_path, redis_server):
    """`app.run()` in the app's own script, not `tether run`: the same one line, no traceback."""
    (tmp_path / "main.py").write_text(textwrap.dedent(f"""
        from tether import App
        app = App(backplane={redis_server.url!r})
        app.run(port={reserve_port()})
    """))
    result = run_without(["redis"], ["main.py"], tmp_path)
    assert_one_line(result, f"ERROR: tether: {REDIS}")


def test_startup_the_testclient_and_the_asgi_lifespan_raise_missing_extra_at_once(tmp_path, redis_server):
    code = textwrap.dedent(f"""
        import asyncio, time
        from tether import App
        from tether.exceptions import MissingExtra
        from tether.testing import TestClient

        URL = {redis_server.url!r}
        started = time.monotonic()
        try:
            asyncio.run(App(backplane=URL).startup())
        except MissingExtra as exc:
            print("startup:", exc)
        try:
            with TestClient(App(backplane=URL)):
                pass
        except MissingExtra as exc:
            print("TestClient:", exc)

        async def lifespan():
            sent = []
            async def receive():
                return {{"type": "lifespan.startup"}}
            async def send(message):
                sent.append(message)
            await App(backplane=URL)({{"type": "lifespan", "asgi": {{"version": "3.0"}}}}, receive, send)
            return sent
        print("ASGI:", asyncio.run(lifespan()))
        print("seconds:", time.monotonic() - started)
    """)
    result = run_without(["redis"], ["-c", code], tmp_path)
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"startup: {REDIS}", f"TestClient: {REDIS}",
                         f"ASGI: [{{'type': 'lifespan.startup.failed', 'message': \"MissingExtra: {REDIS}\"}}]"], \
        result.stdout + result.stderr
    assert float(lines[3].split()[1]) < 5  # raised, not retried (the backplane waits 2 s for Redis)


# -- nats: the backplane ---------------------------------------------------------------------------
NATS = "the NATS backplane needs the nats package: pip install 'tether[nats]'"


@pytest.mark.parametrize("given_by", ["--backplane", "App(backplane=...)"])
def test_tether_run_with_a_nats_backplane_and_no_nats_package_exits_with_the_pip_line(tmp_path, given_by):
    """Before anything connects: no server is needed to fail (there is none on the port)."""
    url = f"nats://127.0.0.1:{reserve_port()}"
    app, flags = "from tether import App\napp = App()\n", ["--backplane", url]
    if given_by != "--backplane":
        app, flags = f"from tether import App\napp = App(backplane={url!r})\n", []
    assert_one_line(tether_run(["nats"], tmp_path, app, *flags), f"tether: {NATS}")


# -- metrics -----------------------------------------------------------------------------------------
def test_tether_run_with_metrics_path_and_no_prometheus_client_exits_with_the_pip_line(tmp_path):
    result = tether_run(["prometheus_client"], tmp_path, "from tether import App\napp = App()\n",
                        "--metrics-path", "/metrics")
    assert_one_line(result, f"tether: {METRICS}")


def test_an_app_with_metrics_path_and_no_prometheus_client_exits_with_the_pip_line(tmp_path):
    result = tether_run(["prometheus_client"], tmp_path, "from tether import App\napp = App(metrics_path='/metrics')\n")
    assert_one_line(result, f"tether: {METRICS}")


def test_app_with_metrics_path_and_no_prometheus_client_raises_missing_extra(tmp_path):
    code = textwrap.dedent("""
        from tether import App
        from tether.exceptions import MissingExtra
        App(health_path="/healthz")  # readiness needs nothing
        try:
            App(metrics_path="/metrics")
        except MissingExtra as exc:
            print(exc)
    """)
    result = run_without(["prometheus_client"], ["-c", code], tmp_path)
    assert result.stdout.splitlines() == [METRICS], result.stderr


# -- fuzz ----------------------------------------------------------------------------------------------
def test_the_fuzz_runner_without_atheris_exits_with_the_pip_line(tmp_path):
    result = run_without(["atheris"], [str(ROOT / "fuzz" / "run.py"), "frames", "--pure", "--runs", "1"], tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert result.stderr.splitlines() == [FUZZ], result.stderr
