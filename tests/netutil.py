"""Helpers that keep tests independent of the machine they run on: its kernel socket
buffer sizes, its speed, its free ports and its proxy settings.

- `small_rcvbuf_socket(size)`: a client socket whose receive buffer is fixed before it
  connects (so the kernel's autotuning, bounded by `net.ipv4.tcp_rmem`, never applies).
- `kernel_send_buffer_bound()`: the most a TCP socket's kernel send buffer can hold on this
  machine, for sizing data that must overflow every buffer between a server and a client.
- `wait_until(predicate)` / `wait_until_stable(read)`: poll with a deadline instead of
  sleeping a fixed time that assumes a speed.
- `reserve_port()`: a port that stays free for a server started right after (no race with
  other processes taking it between the probe and the server's bind).
- `loopback_bypasses_proxies`: a session fixture (registered in conftest.py) so that an
  `http_proxy`/`https_proxy` in the environment does not route 127.0.0.1 through a proxy.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")

# Used when /proc/sys/net is unreadable (not Linux): more than the autotuning maximum of
# the send buffer on the usual systems (Linux's default 4 MiB, macOS's autosndbufmax).
FALLBACK_SEND_BUFFER_BOUND = 32 << 20


def _sysctl_ints(name: str) -> list[int] | None:
    try:
        with open(f"/proc/sys/{name.replace('.', '/')}") as file:
            return [int(value) for value in file.read().split()]
    except (OSError, ValueError):
        return None


def kernel_send_buffer_bound() -> int:
    """Bytes a TCP socket's kernel send buffer may hold at most on this machine.

    Autotuned, the buffer grows up to `net.ipv4.tcp_wmem`'s maximum; set with SO_SNDBUF,
    it is twice the value asked, clamped by `net.core.wmem_max`. The larger of the two
    bounds either way (and thus whatever the server under test does with SO_SNDBUF).
    """
    tcp_wmem = _sysctl_ints("net.ipv4.tcp_wmem")
    wmem_max = _sysctl_ints("net.core.wmem_max")
    if not tcp_wmem or not wmem_max:
        return FALLBACK_SEND_BUFFER_BOUND
    return max(tcp_wmem[-1], 2 * wmem_max[0])


def small_rcvbuf_socket(size: int = 64 * 1024, timeout: float = 10) -> socket.socket:
    """An unconnected TCP socket with its receive buffer set to `size` before connecting.

    Set before connect(), SO_RCVBUF also fixes the window the connection advertises and
    turns receive-buffer autotuning off (Linux), so what the client's kernel can absorb no
    longer depends on `net.ipv4.tcp_rmem`. The kernel may double the value and clamps it by
    `net.core.rmem_max`: read the effective size with `effective_rcvbuf(sock)`.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.settimeout(timeout)
    return sock


def effective_rcvbuf(sock: socket.socket) -> int:
    """The receive buffer the kernel actually gave `sock` (its bookkeeping counts it whole)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything `sock` receives until the peer ends the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def wait_until(predicate: Callable[[], T], timeout: float = 10, interval: float = 0.01,
               message: str = "condition") -> T:
    """Poll `predicate()` until it returns something truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {message}"
        time.sleep(interval)


def wait_until_stable(read: Callable[[], T], settle: float = 0.5, timeout: float = 10,
                      interval: float = 0.01, done: Callable[[T], bool] = lambda value: False) -> T:
    """Poll `read()` until its value has not changed for `settle` s (or `done(value)`), and
    return that value. For "this stops progressing" without assuming how fast it gets there;
    fails if it is still changing after `timeout` s."""
    deadline = time.monotonic() + timeout
    value = read()
    since = time.monotonic()
    while not done(value):
        time.sleep(interval)
        now = time.monotonic()
        current = read()
        if current != value:
            value, since = current, now
        elif now - since >= settle:
            break
        assert now < deadline, f"still changing after {timeout} s (last value {value!r})"
    return value


def reserve_port(host: str = "127.0.0.1") -> int:
    """A free port on `host` that no other process will be given for about a minute.

    Binding port 0 and closing the probe leaves a race: any process may take the port
    before the server under test binds it. Here the probe accepts one connection and closes
    its end first, which leaves the port in TIME_WAIT: the kernel then gives it to nobody
    else (not to bind(0), not as a client's local port), while a server that binds it with
    SO_REUSEADDR, as asyncio, uvicorn, hypercorn and gunicorn do, gets it at once.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=5):
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: it holds the TIME_WAIT
        return address[1]


_PROXY_BYPASS = ("127.0.0.1", "localhost")


@pytest.fixture(autouse=True, scope="session")
def loopback_bypasses_proxies() -> Iterator[None]:
    """Clients in the tests (urllib, websockets) honour http_proxy/https_proxy/all_proxy:
    on a machine that sets one, 127.0.0.1 would go through the proxy. Add the loopback to
    no_proxy for the whole session (child processes inherit it, harmlessly)."""
    existing = [name for name in (os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or "").split(",") if name]
    merged = ",".join(existing + [host for host in _PROXY_BYPASS if host not in existing])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("no_proxy", merged)
        patch.setenv("NO_PROXY", merged)
        yield
