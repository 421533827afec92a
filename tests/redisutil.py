"""A real Redis server for tests: Debian's `redis-server`, one process per test, never a mock.

`RedisServer` starts `redis-server` on a free 127.0.0.1 port (reserved like
`netutil.reserve_port()`), in a fresh temp dir, with persistence off, and waits until it
answers PING. It then offers what tests of a Redis backplane need to break it on purpose:

- `url` (`redis://127.0.0.1:P/0`), `unix_url` (`unix:///tmp/.../redis.sock`), and with
  `tls=True` also `tls_url` (`rediss://127.0.0.1:T/0`) and `ca_file` (the CA that signed the
  server's certificate; the plain port stays open beside the TLS one).
- `stop()` (SIGTERM, then wait), `kill()` (SIGKILL), `start()` again, `restart()` (kill, then
  start on the same port in the same dir), `pause(seconds)` (`CLIENT PAUSE ms ALL`: every
  client's commands wait, the helper's too), `unpause()` (for a `mode="WRITE"` pause),
  `client_kill_pubsub()` (`CLIENT KILL TYPE pubsub`: drops every subscriber's connection),
  `connected_clients()` (from `INFO clients`, not counting the helper's own connection),
  `client_list(kind)`, `info(section)`, `execute(*args)`, `client(**kw)` (a new redis-py
  client on `url`).
- `password="..."`: the server requires it (`--requirepass`, and `--masterauth` for a replica
  of a server with the same password); the helper's own connection and `client()` send it,
  `url` does not carry it.
- `netns=host` (a `tests.netns` host): the server runs inside that network namespace, bound
  to the host's address (and its own 127.0.0.1), port 6379 by default; the helper talks to it
  through its unix socket, which crosses network namespaces.

The server runs with `--hz 100` (its timers tick every 10 ms instead of 100 ms: pauses end
and SIGTERM is handled within ~10 ms). The helper talks to the server on one connection of
its own, with redis-py's sync client when it is importable and with a small raw-RESP socket
client otherwise (`backend="raw"` forces that). `tls_supported()` -> (bool, reason) tells
whether this redis-server speaks TLS (Debian's does), for a test to skip on.

Fixtures `redis_server` (a fresh server per test) and `redis_factory` (`redis_factory(**kw)`
starts one more; all are stopped after the test). A test module imports them by their
functions' names, which differ from the fixtures' so that ruff sees no redefinition (F811) in
`def test_x(redis_server)`:

    from .redisutil import redis_factory_fixture, redis_server_fixture  # noqa: F401

    def test_reconnects(redis_server):
        node = start_node(redis_url=redis_server.url)
        redis_server.restart()          # same port, empty data
        ...
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from .netutil import reserve_port

try:
    import redis as _redis
except ImportError:  # the raw-RESP client below does the helper's own talking
    _redis = None  # type: ignore[assignment]

STARTUP_TIMEOUT = 10.0  # seconds: bound on "until it answers PING"
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """Path of the redis-server to run: $TETHER_REDIS_SERVER, else the one on PATH."""
    found = os.environ.get("TETHER_REDIS_SERVER") or shutil.which("redis-server")
    if not found and os.path.exists("/usr/bin/redis-server"):
        found = "/usr/bin/redis-server"
    if not found:
        raise RuntimeError(
            "redis-server not found: `make test` installs it (Debian's package redis-server), "
            "or run `apt-get install -y redis-server`")
    return found


class RedisReplyError(Exception):
    """An error reply from the server (raw-RESP backend)."""


class _RawClient:
    """Just enough RESP2 to send admin commands on one connection (no pipelining)."""

    def __init__(self, *, host: str | None = None, port: int | None = None,
                 unix_path: str | None = None, timeout: float = 5.0, password: str | None = None) -> None:
        self.host, self.port, self.unix_path, self.timeout = host, port, unix_path, timeout
        self.password = password
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self.unix_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.unix_path)
                except OSError:
                    sock.close()
                    raise
            else:
                assert self.host is not None and self.port is not None
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock, self._buf = sock, b""
            if self.password is not None:
                self.execute("AUTH", self.password)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, *args: Any) -> Any:
        sock = self._connect()
        parts = [str(a).encode() if not isinstance(a, bytes) else a for a in args]
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        try:
            sock.sendall(payload)
            return self._read_reply()
        except (OSError, ConnectionError):
            self.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self._buf += chunk

    def _read_reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self._buf) < size + 2:
                self._fill()
            data, self._buf = self._buf[:size], self._buf[size + 2:]
            return data.decode()
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read_reply() for _ in range(count)]
        raise RedisReplyError(f"unexpected reply line {line!r}")


def _parse_info_value(value: str) -> Any:
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    if "=" in value and "," in value or value.count("=") == 1:
        return {k: _parse_info_value(v) for k, _, v in (item.partition("=") for item in value.split(","))}
    return value


def parse_info(text: str) -> dict[str, Any]:
    """INFO's `key:value` lines as a dict, numbers converted (as redis-py's client.info() does)."""
    info: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        info[key] = _parse_info_value(value)
    return info


class _Admin:
    """The helper's own single connection to the server: redis-py or raw RESP."""

    def __init__(self, backend: str, *, host: str, port: int, unix_path: str | None,
                 password: str | None = None) -> None:
        self.backend = backend
        if backend == "redis-py":
            assert _redis is not None
            kw: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 1,
                                  "single_connection_client": True, "decode_responses": True, "password": password}
            if unix_path:
                self._client: Any = _redis.Redis(unix_socket_path=unix_path, **kw)
            else:
                self._client = _redis.Redis(host=host, port=port, **kw)
        else:
            self._client = _RawClient(host=host, port=port, unix_path=unix_path, password=password)

    def ping(self) -> bool:
        if self.backend == "redis-py":
            return bool(self._client.ping())
        return bool(self._client.execute("PING") == "PONG")

    def info(self, section: str | None) -> dict[str, Any]:
        if self.backend == "redis-py":
            return dict(self._client.info(section) if section else self._client.info())
        return parse_info(self._client.execute("INFO", *([section] if section else [])))

    def execute(self, *args: Any) -> Any:
        return self._client.execute_command(*args) if self.backend == "redis-py" else self._client.execute(*args)

    def client_pause(self, ms: int) -> None:
        if self.backend == "redis-py":
            self._client.client_pause(ms, all=True)
        else:
            self._client.execute("CLIENT", "PAUSE", ms, "ALL")

    def client_kill_type(self, kind: str) -> int:
        if self.backend == "redis-py":
            return int(self._client.client_kill_filter(_type=kind))
        return int(self._client.execute("CLIENT", "KILL", "TYPE", kind))

    def close(self) -> None:
        self._client.close()


# --- TLS: a throwaway CA and a server certificate signed by it ------------------------------

_CERT_ROOT: str | None = None


def _cert_root() -> str:
    global _CERT_ROOT
    if _CERT_ROOT is None:
        _CERT_ROOT = tempfile.mkdtemp(prefix="tether-redis-certs-")
        atexit.register(shutil.rmtree, _CERT_ROOT, True)
    return _CERT_ROOT


def _san_entries(names: Sequence[str]) -> list[tuple[str, str]]:
    entries = []
    for name in names:
        try:
            entries.append(("IP", str(ipaddress.ip_address(name))))
        except ValueError:
            entries.append(("DNS", name))
    return entries


def _certs_with_openssl(directory: Path, names: Sequence[str]) -> None:
    openssl = shutil.which("openssl")
    assert openssl
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30, cwd=directory)

    run("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=tether test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=tether test server")
    san = ",".join(f"{kind}:{value}" for kind, value in _san_entries(names))
    (directory / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "2",
        "-days", "2", "-out", "server.crt", "-extfile", "server.ext")


def _certs_with_cryptography(directory: Path, names: Sequence[str]) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=2)

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(value)) if kind == "IP" else x509.DNSName(value)
        for kind, value in _san_entries(names)]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test server")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_key(ca_key, directory / "ca.key")
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key(key, directory / "server.key")
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cryptography_available() -> bool:
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def make_certificates(names: tuple[str, ...] = ("127.0.0.1", "localhost"), tool: str = "auto") -> Path:
    """A dir with ca.crt/ca.key and server.crt/server.key (EC P-256, CA-signed, SANs `names`),
    made once per process and per set of names: by the `openssl` command (Debian's openssl,
    on the machine image) or, without it, by the `cryptography` package. `tool` forces one."""
    if tool == "auto":
        tool = "openssl" if shutil.which("openssl") else "cryptography" if _cryptography_available() else ""
    if not tool:
        raise RuntimeError("no way to make a certificate: neither the openssl command nor the cryptography package")
    directory = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=_cert_root()))
    (_certs_with_openssl if tool == "openssl" else _certs_with_cryptography)(directory, names)
    return directory


# --- the server -----------------------------------------------------------------------------


class _NetnsHost(Protocol):
    name: str
    address: str

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]: ...


class RedisServer:
    """One real redis-server process; see the module docstring. Not started until `start()`
    (or `with RedisServer() as server:`); `close()` stops it and removes its dir."""

    def __init__(self, *, host: str | None = None, port: int | None = None, unix_socket: bool = True,
                 tls: bool = False, tls_auth_clients: bool = False, netns: _NetnsHost | None = None,
                 args: Sequence[str] = (), backend: str = "auto",
                 startup_timeout: float = STARTUP_TIMEOUT, password: str | None = None) -> None:
        if backend == "auto":
            backend = "redis-py" if _redis is not None else "raw"
        if backend not in ("redis-py", "raw"):
            raise ValueError(f"backend must be 'auto', 'redis-py' or 'raw', not {backend!r}")
        if backend == "redis-py" and _redis is None:
            raise RuntimeError("backend='redis-py' but redis-py is not installed")
        self.backend = backend
        self.netns = netns
        self.host = host or (netns.address if netns is not None else "127.0.0.1")
        # Inside a fresh namespace every port is free; on the machine's loopback reserve one.
        self.port = port or (6379 if netns is not None else reserve_port(self.host))
        self.tls = tls
        self.tls_port = (6380 if netns is not None else reserve_port(self.host)) if tls else None
        self.tls_auth_clients = tls_auth_clients
        self.extra_args = list(args)
        self.startup_timeout = startup_timeout
        self.password = password  # requirepass (and masterauth, for a replica of a server with the same)
        self.dir = Path(tempfile.mkdtemp(prefix="tether-redis-"))
        self.unix_path: str | None = None
        if unix_socket or netns is not None:  # the helper reaches a namespaced server by its socket
            path = self.dir / "redis.sock"
            if len(str(path)) > 100:  # sun_path holds 108 bytes
                self.dir = Path(tempfile.mkdtemp(prefix="tether-redis-", dir="/tmp"))
                path = self.dir / "redis.sock"
            self.unix_path = str(path)
        self.cert_dir: Path | None = None
        if tls:
            names = tuple(dict.fromkeys([self.host, "127.0.0.1", "localhost"]))
            self.cert_dir = make_certificates(names)
        self.log_path = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: _Admin | None = None
        self.starts = 0

    # addresses

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if not self.unix_path:
            raise AttributeError("this server has no unix socket (unix_socket=False)")
        return f"unix://{self.unix_path}"

    @property
    def tls_url(self) -> str:
        if not self.tls:
            raise AttributeError("this server has no TLS port (tls=False)")
        return f"rediss://{self.host}:{self.tls_port}/0"

    @property
    def ca_file(self) -> str:
        if self.cert_dir is None:
            raise AttributeError("this server has no TLS port (tls=False)")
        return str(self.cert_dir / "ca.crt")

    @property
    def cert_file(self) -> str:
        """The server's certificate; also valid as a client certificate (tls_auth_clients=True)."""
        if self.cert_dir is None:
            raise AttributeError("this server has no TLS port (tls=False)")
        return str(self.cert_dir / "server.crt")

    @property
    def key_file(self) -> str:
        if self.cert_dir is None:
            raise AttributeError("this server has no TLS port (tls=False)")
        return str(self.cert_dir / "server.key")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # lifecycle

    def argv(self) -> list[str]:
        binds = [self.host] + (["127.0.0.1"] if self.netns is not None and self.host != "127.0.0.1" else [])
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", *binds, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no", "--hz", "100",
                "--logfile", ""]
        if self.unix_path:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password is not None:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if self.tls:
            assert self.cert_dir is not None
            argv += ["--tls-port", str(self.tls_port), "--tls-cert-file", self.cert_file,
                     "--tls-key-file", self.key_file, "--tls-ca-cert-file", self.ca_file,
                     "--tls-auth-clients", "yes" if self.tls_auth_clients else "no"]
        return argv + self.extra_args

    def start(self) -> RedisServer:
        if self.running:
            raise RuntimeError("already running")
        with open(self.log_path, "ab") as log:
            kw: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT}
            self.process = (self.netns.popen(self.argv(), **kw) if self.netns is not None
                            else subprocess.Popen(self.argv(), **kw))
        self.starts += 1
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.002
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.admin().ping():
                    return
            except Exception as exc:  # not listening yet (or loading)
                self._close_admin()
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not answer PING within {self.startup_timeout} s "
                                       f"({exc!r}):\n{self.log_tail()}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, signum: int, timeout: float) -> int | None:
        self._close_admin()
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else None
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then wait for the exit (SIGKILL past `timeout`). Returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: the server vanishes at once, as in a crash; its clients see the TCP close."""
        return self._signal(signal.SIGKILL, STOP_TIMEOUT)

    def restart(self) -> RedisServer:
        """Kill, then start again on the same port(s) and dir, and wait for PING. Data is gone
        (nothing persisted); clients must reconnect and resubscribe."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # talking to it

    def admin(self) -> _Admin:
        if self._admin is None:
            self._admin = _Admin(self.backend, host=self.host, port=self.port, unix_path=self.unix_path,
                                 password=self.password)
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:
                pass
            self._admin = None

    def execute(self, *args: Any) -> Any:
        """Any command, on the helper's own connection."""
        return self.admin().execute(*args)

    def ping(self) -> bool:
        return self.admin().ping()

    def info(self, section: str | None = None) -> dict[str, Any]:
        return self.admin().info(section)

    def pause(self, seconds: float, mode: str = "ALL") -> None:
        """`CLIENT PAUSE ms ALL`: for `seconds`, the server holds every client's commands
        (answered when the pause ends, within ~10 ms: the server runs with --hz 100). Returns
        at once. With ALL, the helper's own later commands wait too (info, connected_clients,
        unpause: Redis 7.0 holds CLIENT UNPAUSE as well), while kill()/restart() act at once.
        mode="WRITE" holds only writes, and unpause() ends it."""
        if mode == "ALL":
            self.admin().client_pause(max(1, round(seconds * 1000)))
        else:
            self.execute("CLIENT", "PAUSE", max(1, round(seconds * 1000)), mode)

    def unpause(self) -> None:
        """`CLIENT UNPAUSE`: ends a WRITE pause at once; under an ALL pause it waits for the end."""
        self.execute("CLIENT", "UNPAUSE")

    def client_kill_pubsub(self) -> int:
        """`CLIENT KILL TYPE pubsub`: close every connection in subscribed state (the server's
        side closes). Returns how many were killed."""
        return self.admin().client_kill_type("pubsub")

    def client_list(self, kind: str | None = None) -> list[dict[str, str]]:
        """`CLIENT LIST [TYPE kind]` (kind: normal, pubsub, replica, master), each client a dict,
        the helper's own connection included (its `name` is empty like others': compare `id`)."""
        text = self.execute("CLIENT", "LIST", *(["TYPE", kind] if kind else []))
        if isinstance(text, bytes):
            text = text.decode()
        return [dict(field.partition("=")[::2] for field in line.split()) for line in str(text).splitlines() if line]

    def connected_clients(self) -> int:
        """Clients connected now (INFO clients), not counting the helper's own connection."""
        return int(self.info("clients")["connected_clients"]) - 1

    def client(self, **kw: Any) -> Any:
        """A new redis-py client on `url` (closed by the caller)."""
        if _redis is None:
            raise RuntimeError("redis-py is not installed")
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("password", self.password)
        return _redis.Redis.from_url(self.url, **kw)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid} running={self.running}>"


@functools.cache
def tls_supported() -> tuple[bool, str]:
    """Whether this redis-server speaks TLS (Debian's is built with it): starts one with a
    TLS port and PINGs it over TLS. (True, "") or (False, why)."""
    try:
        server = RedisServer(tls=True)
    except Exception as exc:
        return False, f"cannot prepare a TLS server: {exc}"
    try:
        server.start()
    except Exception as exc:
        server.close()
        return False, f"redis-server refused a TLS port: {exc}"
    try:
        import ssl
        context = ssl.create_default_context(cafile=server.ca_file)
        assert server.tls_port is not None
        with socket.create_connection((server.host, server.tls_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=server.host) as tls:
            tls.sendall(b"PING\r\n")
            reply = tls.recv(64)
        if not reply.startswith(b"+PONG"):
            return False, f"PING over TLS got {reply!r}"
        return True, ""
    except Exception as exc:
        return False, f"TLS handshake or PING failed: {exc!r}"
    finally:
        server.close()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A fresh redis-server for this test (about 10-50 ms to start), stopped after it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="redis_factory")
def redis_factory_fixture() -> Iterator[Callable[..., RedisServer]]:
    """`redis_factory(**RedisServer kwargs)` starts one more server; all stop after the test."""
    servers: list[RedisServer] = []

    def factory(**kw: Any) -> RedisServer:
        server = RedisServer(**kw)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in reversed(servers):
            server.close()
