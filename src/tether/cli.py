"""The `tether` command (also `python -m tether`).

    tether run module:app [--host H] [--port P] [--workers N] [--reload] [--log-level L]
                          [--ssl-certfile F --ssl-keyfile F] [--max-message-size N ...]
    tether routes module:app

The current directory is put on the import path first, as uvicorn does. Every App setting
is also a flag (`--max-message-size`, `--ping-interval`, `--allowed-origins a,b`, ...).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import fields
from typing import Any

from .config import Settings

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
    except ImportError as exc:
        raise LoadError(f"could not import module {module_name!r}: {exc}") from exc
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
        if field.name == "allowed_origins":
            parser.add_argument(flag, type=lambda v: [o for o in v.split(",") if o], default=None,
                                help="comma-separated browser origins allowed besides the server's own ('*': all)")
        else:
            kind = int if isinstance(field.default, int) else float
            parser.add_argument(flag, type=kind, default=None, help=f"(default {field.default})")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description="Run and inspect tether apps.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an app on tether's native server")
    run.add_argument("app", help="module:attribute, e.g. main:app")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    run.add_argument("--reload", action="store_true", help="restart when a .py file under the cwd changes")
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    run.add_argument("--ssl-certfile")
    run.add_argument("--ssl-keyfile")
    _settings_flags(run)
    routes = commands.add_parser("routes", help="list an app's routes")
    routes.add_argument("app")
    return parser


def _snapshot(root: str) -> dict[str, float]:
    mtimes = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    mtimes[path] = os.stat(path).st_mtime
                except OSError:
                    pass
    return mtimes


def _reload_loop(argv: list[str]) -> int:
    """Run the server in a child process; restart it whenever a .py file changes."""
    child_argv = [sys.executable, "-m", "tether"] + [a for a in argv if a != "--reload"]
    logging.getLogger("tether").info("reloading on changes under %s", os.getcwd())
    while True:
        before = _snapshot(os.getcwd())
        child = subprocess.Popen(child_argv)
        try:
            while child.poll() is None:
                time.sleep(0.5)
                if _snapshot(os.getcwd()) != before:
                    logging.getLogger("tether").info("change detected, restarting")
                    child.terminate()
                    child.wait(timeout=15)
                    break
            else:
                return child.returncode
        except KeyboardInterrupt:
            child.terminate()
            return child.wait(timeout=15)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(), format="%(levelname)s: %(message)s")
    if args.command == "run" and args.reload:
        sys.exit(_reload_loop(argv))
    try:
        app = load_app(args.app)
    except LoadError as exc:
        sys.exit(f"tether: {exc}")
    if args.command == "routes":
        for route in app.routes:
            kind = "WS" if route.kind == "websocket" else ",".join(sorted(route.methods - {"HEAD"}))
            name = getattr(route.endpoint, "__qualname__", type(route.endpoint).__name__)
            print(f"{kind:<12} {route.path:<32} {name}")
        return
    for field in fields(Settings):
        value = getattr(args, field.name)
        if value is not None:
            setattr(app.settings, field.name, value)
    app.settings.__post_init__()
    from .server.serve import run

    run(app, host=args.host, port=args.port, workers=args.workers, ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile, log_level=args.log_level)
