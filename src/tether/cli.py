"""The `tether` command (also `python -m tether`).

    tether run module:app [--host H] [--port P] [--workers N] [--reload] [--log-level L]
                          [--ssl-certfile F --ssl-keyfile F] [--max-message-size N ...]
    tether routes module:app

The current directory is put on the import path first, as uvicorn does. Every App setting
is also a flag (`--max-message-size`, `--ping-interval`, `--allowed-origins a,b`, ...).
A target that does not load, a bad setting, or a feature asked for whose optional package
is not installed (`tether.exceptions.MissingExtra`) ends the command before anything is
served: one line on stderr, `tether: ...` (the pip command, for a missing package), status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import fields
from typing import Any, NoReturn

from . import __version__
from .backplane import check as check_backplane
from .backplane import configured_url as backplane_url
from .config import Settings
from .exceptions import MissingExtra

__all__ = ["main", "load_app"]


class LoadError(Exception):
    """`module:app` could not be imported or does not name an App."""


def load_app(target: str) -> Any:
    """Import `module:attribute` (attribute defaults to `app`) with the cwd on sys.path."""
    from .app import App

    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except MissingExtra:
        raise  # the app asks for a feature whose package is not installed: main() says which
    except ImportError as exc:
        raise LoadError(f"could not import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module itself fails: SyntaxError, NameError...
        raise LoadError(f"could not import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    app = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(app, App):
        raise LoadError(f"{target} is a {type(app).__name__}, not a tether App")
    return app


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "backplane":
            parser.add_argument(flag, default=None, metavar="URL",
                                help="share the hub with other processes and hosts: redis://host:6379/0, "
                                     "rediss://..., unix://... (default: $TETHER_BACKPLANE, else none)")
        elif field.name == "permessage_deflate":
            parser.add_argument(flag, action="store_const", const=True, default=None,
                                help="negotiate RFC 7692 compression with tether's defaults (default: off)")
        elif field.name == "slow_client":
            parser.add_argument(flag, choices=["close", "wait"], default=None,
                                help="a client past --max-send-buffer: close it 1008, or make sends wait "
                                     "(default: close)")
        elif field.name in ("metrics_path", "health_path"):
            what = "Prometheus metrics" if field.name == "metrics_path" else "the readiness check (503 once stopping)"
            parser.add_argument(flag, default=None, metavar="PATH",
                                help=f"serve {what} at PATH (default: off; see docs/operations.md)")
        elif field.name == "allowed_origins":
            parser.add_argument(flag, type=lambda v: [o for o in v.split(",") if o], default=None,
                                help="comma-separated browser origins allowed besides the server's own ('*': all)")
        else:
            kind = int if isinstance(field.default, int) else float
            parser.add_argument(flag, type=kind, default=None, help=f"(default: {field.default})")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description="Run and inspect tether apps.")
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an app on tether's native server")
    run.add_argument("app", help="module:attribute, e.g. main:app")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    run.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    run.add_argument("--workers", type=int, default=1,
                     help="processes sharing the port (SO_REUSEPORT) (default: %(default)s)")
    run.add_argument("--reload", action="store_true", help="restart when a .py file under the cwd changes")
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                     help="(default: %(default)s)")
    run.add_argument("--ssl-certfile")
    run.add_argument("--ssl-keyfile")
    _settings_flags(run)
    routes = commands.add_parser("routes", help="list an app's routes")
    routes.add_argument("app")
    return parser


def _report_load_error(exc: LoadError, module_name: str) -> None:
    """Print the traceback of what failed inside the app's code (not for a module that
    does not exist: the message says it all)."""
    cause = exc.__cause__
    if cause is None:
        return
    if isinstance(cause, ModuleNotFoundError) and cause.name and (
            module_name == cause.name or module_name.startswith(cause.name + ".")):
        return
    traceback.print_exception(cause, file=sys.stderr)


def _snapshot(root: str) -> dict[str, float]:
    mtimes = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    mtimes[path] = os.stat(path).st_mtime
    return mtimes


def _interrupt(_signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def _stop(child: subprocess.Popen[bytes]) -> int:
    """SIGTERM the server (a graceful shutdown), SIGKILL it if it hangs; its exit status."""
    child.terminate()
    try:
        code = child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    return code if code >= 0 else 128 - code


def _reload_loop(argv: list[str]) -> int:
    """Run the server in a child process; restart it whenever a .py file under the cwd changes.

    A server that exits by itself (an edit that does not import, a failing startup hook: its
    traceback is on stderr) is reported, and started again at the next change. SIGINT and
    SIGTERM stop the server gracefully and return its exit status.
    """
    log = logging.getLogger("tether")
    child_argv = [sys.executable, "-m", "tether"] + [a for a in argv if a != "--reload"]
    root = os.getcwd()
    log.info("reloading on changes under %s", root)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    child: subprocess.Popen[bytes] | None = None
    try:
        while True:
            before = _snapshot(root)
            child = subprocess.Popen(child_argv)
            while child.poll() is None and _snapshot(root) == before:
                time.sleep(0.5)
            if child.poll() is None:
                log.info("change detected, restarting")
                _stop(child)
                continue
            log.error("the server exited with status %d; waiting for a change under %s to restart it",
                      child.returncode, root)
            while _snapshot(root) == before:
                time.sleep(0.5)
            log.info("change detected, restarting")
    except KeyboardInterrupt:
        return 0 if child is None or child.poll() is not None else _stop(child)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_routes(app: Any) -> None:
    """One line per route: methods (or WS and the handler style), path, handler; then mounts."""
    for route in app.routes:
        endpoint = route.endpoint
        if route.kind == "websocket":
            kind = f"WS {getattr(endpoint, 'style', 'session')}"
            handler = getattr(endpoint, "cls", endpoint)  # a class-style endpoint names its class
        else:
            kind, handler = ",".join(sorted(route.methods - {"HEAD"})), endpoint
        name = getattr(handler, "__qualname__", type(handler).__name__)
        print(f"{kind:<14} {route.path:<32} {name}")
    for prefix, mounted in app.mounts:
        name = getattr(mounted, "__qualname__", type(mounted).__name__)
        print(f"{'MOUNT':<14} {prefix.rstrip('/') + '/...':<32} {name} (ASGI)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(), format="%(levelname)s: %(message)s")
    if args.command == "run" and args.reload:
        sys.exit(_reload_loop(argv))
    try:
        app = load_app(args.app)
    except LoadError as exc:
        _report_load_error(exc, args.app.partition(":")[0])
        sys.exit(f"tether: {exc}")
    except MissingExtra as exc:
        sys.exit(f"tether: {exc}")
    if args.command == "routes":
        _print_routes(app)
        return
    for field in fields(Settings):
        value = getattr(args, field.name)
        if value is not None:
            setattr(app.settings, field.name, value)
    try:  # a bad setting, or a feature whose package is not installed: before serving or forking
        app.settings.__post_init__()
        check_backplane(backplane_url(app.settings.backplane))
    except (MissingExtra, ValueError) as exc:
        sys.exit(f"tether: {exc}")
    from .server.serve import run

    run(app, host=args.host, port=args.port, workers=args.workers, ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile, log_level=args.log_level)
