"""Separate hosts on one machine, for tests of what crosses a network: Linux network
namespaces joined by a bridge, made with iproute2 (`ip netns`, veth, bridge). Needs root.

Layout of `hosts(["redis", "a", "b"])` (one random /24, 10.X.Y.0/24, per run, checked against
the machine's own routes and addresses):

    namespace tether-test-<pid>-<hex>-redis   eth0 10.X.Y.1/24  --veth--+
    namespace tether-test-<pid>-<hex>-a       eth0 10.X.Y.2/24  --veth--+-- bridge br0 in
    namespace tether-test-<pid>-<hex>-b       eth0 10.X.Y.3/24  --veth--+   namespace ...-br
    the root namespace (the test itself)      tt<hex> 10.X.Y.254/24 -veth-+

Each host has its own loopback (up), its own ports, and no default route: it reaches the
other hosts and the root namespace's 10.X.Y.254, nothing else. The root namespace is joined
to the bridge by one more veth (the choice made here, the simpler one: the test's own
in-process clients connect straight to a host's address, and a host reaches a server the test
runs in-process at `net.root_address`). The root namespace gets one link and the route of that
/24, nothing more: no default route, forwarding or NAT is changed.

    from .netns import hosts, netns_available

    def test_two_nodes(tmp_path):
        ok, reason = netns_available()
        if not ok:
            pytest.skip(reason)
        with hosts(["redis", "a", "b"]) as net:
            redis, a, b = net
            node = a.popen([sys.executable, "-m", "tether", ...])  # runs inside host a
            b.run(["ip", "addr"])                                  # CompletedProcess
            a.disconnect(); ...; a.reconnect()                      # silent partition
        # namespaces deleted, every process started in them killed

`hosts(n)` names the hosts a, b, c, ...; `hosts(names)` uses the names given (lower-case
letters, digits, '-' and '_'). `net[0]`, `net["a"]`, iteration and unpacking give the hosts.
A `Host` has `.label`, `.name` (the namespace), `.address`, `.interface` ("eth0"),
`.popen(argv, **kw)` (a subprocess.Popen inside it, tracked and killed at the end),
`.run(argv, **kw)` (subprocess.run inside it; check=True, capture_output, text, timeout 30 s by
default), `.pids()` (every process inside it), and `.disconnect()` / `.reconnect()` (detach its
veth from the bridge: its traffic is dropped silently, its sockets see no error, as with a cut
cable beyond the switch). Teardown, in `finally`: every process started inside is terminated
(SIGKILL after 2 s) by PID, then any other process still inside the namespaces, then the
namespaces and the root link are deleted. Namespaces left by a run that was killed (its PID
gone, nothing inside, older than a minute) are removed by the next run.

`netns_available()` -> (bool, reason): tries `ip netns add` of a throwaway namespace and a veth
in it, once per process, so a test can `pytest.skip(reason)` naming what the sandbox refused.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

PREFIX = "tether-test-"
IP_TIMEOUT = 10.0  # seconds for one `ip` command
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,20}$")


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    result = subprocess.run([ip, *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


@functools.cache
def netns_available() -> tuple[bool, str]:
    """(True, "") if this process can make network namespaces with veth links in them, else
    (False, the reason: no `ip` command, not root, or the error the kernel gave)."""
    if not (shutil.which("ip") or os.path.exists("/usr/sbin/ip")):
        return False, "network namespaces: the `ip` command (Debian's iproute2) is not installed"
    if os.geteuid() != 0:
        return False, f"network namespaces need root; this test runs as uid {os.geteuid()}"
    name = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", name)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return False, f"network namespaces refused here: {exc}"
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        _ip("-n", name, "link", "add", "b0", "type", "bridge")
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return False, f"network namespaces: veth or bridge refused here: {exc}"
    finally:
        _ip("netns", "del", name, check=False)
    return True, ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespace_pids(name: str) -> list[int]:
    result = _ip("netns", "pids", name, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def remove_stale(min_age: float = 60) -> list[str]:
    """Delete namespaces left by earlier runs that died before their teardown: named
    tether-test-<pid>-..., that PID gone, no process inside, made over `min_age` s ago."""
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"^{PREFIX}(\d+)-", name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        try:
            age = time.time() - os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            continue
        if age >= min_age and not _namespace_pids(name):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random 10.X.Y.0/24 that overlaps no route or address of the root namespace."""
    taken = []
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines() + \
            _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        for word in line.split():
            try:
                network = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if network.version == 4 and network.prefixlen > 0:
                taken.append(network)
    rng = random.SystemRandom()
    for _ in range(1000):
        subnet = ipaddress.IPv4Network(f"10.{rng.randint(16, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise NetnsError("no free 10.x.y.0/24 for the test hosts")


class Host:
    """One test host: a network namespace with eth0 on the test bridge."""

    def __init__(self, network: Network, label: str, index: int, address: str) -> None:
        self.network = network
        self.label = label
        self.name = f"{network.prefix}-{label}"
        self.address = address
        self.interface = "eth0"
        self.bridge_port = f"v{index}"  # its veth's other end, in the bridge namespace
        self.processes: list[subprocess.Popen[Any]] = []

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed to run inside this host."""
        if isinstance(argv, str):
            raise TypeError("argv must be a list of arguments, not a string")
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv, **kw) inside this host (`ip netns exec` execs the command, so
        the Popen's pid is the command's). Killed at teardown if still running."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.command(argv), **kw)
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv) inside this host; check=True, capture_output=True, text=True and
        timeout=30 unless given."""
        for key, value in (("check", True), ("capture_output", True), ("text", True), ("timeout", 30),
                           ("stdin", subprocess.DEVNULL)):
            kw.setdefault(key, value)
        return subprocess.run(self.command(argv), **kw)

    def pids(self) -> list[int]:
        """Every process inside this host's namespace now."""
        return _namespace_pids(self.name)

    def disconnect(self) -> None:
        """Cut this host off the bridge: packets to and from it are dropped without a word
        (its eth0 stays up, so nothing inside sees an error; TCP peers only see silence)."""
        _ip("-n", self.network.bridge_ns, "link", "set", "dev", self.bridge_port, "nomaster")

    def reconnect(self) -> None:
        """Undo `disconnect()`."""
        _ip("-n", self.network.bridge_ns, "link", "set", "dev", self.bridge_port, "master", "br0")

    def _kill_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 2
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
        # Whatever those started that is still inside (daemons, grandchildren): by PID too.
        for _ in range(3):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"<Host {self.label} {self.address} netns={self.name}>"


class Network:
    """The hosts of one `hosts()` block, and the root namespace's place on their bridge."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.prefix = f"{PREFIX}{self.tag}"
        self.bridge_ns = f"{self.prefix}-br"
        self.subnet = _pick_subnet()
        addresses = list(self.subnet.hosts())
        self.root_address = str(addresses[-1])  # .254
        self.root_interface = f"tt{secrets.token_hex(4)}"
        self.hosts = [Host(self, label, i, str(addresses[i])) for i, label in enumerate(labels)]
        self._namespaces: list[str] = []
        self._root_link = False

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, key: int | str) -> Host:
        if isinstance(key, str):
            for host in self.hosts:
                if host.label == key:
                    return host
            raise KeyError(key)
        return self.hosts[key]

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def setup(self) -> None:
        bridge = self.bridge_ns
        self._add_namespace(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        prefixlen = self.subnet.prefixlen
        for host in self.hosts:
            self._add_namespace(host.name)
            _ip("-n", bridge, "link", "add", host.bridge_port, "type", "veth",
                "peer", "name", host.interface, "netns", host.name)
            _ip("-n", bridge, "link", "set", host.bridge_port, "master", "br0", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/{prefixlen}", "dev", host.interface)
            _ip("-n", host.name, "link", "set", host.interface, "up")
        _ip("link", "add", self.root_interface, "type", "veth", "peer", "name", "vroot", "netns", bridge)
        self._root_link = True
        _ip("-n", bridge, "link", "set", "vroot", "master", "br0", "up")
        _ip("addr", "add", f"{self.root_address}/{prefixlen}", "dev", self.root_interface)
        _ip("link", "set", self.root_interface, "up")

    def teardown(self) -> None:
        errors = []
        for host in self.hosts:
            try:
                host._kill_processes()
            except Exception as exc:
                errors.append(exc)
        if self._root_link:
            _ip("link", "del", self.root_interface, check=False)
        for name in reversed(self._namespaces):
            for pid in _namespace_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            result = _ip("netns", "del", name, check=False)
            if result.returncode != 0:
                errors.append(NetnsError(f"could not delete namespace {name}: {result.stderr.strip()}"))
        if errors:
            raise errors[0]


def _labels(spec: int | Sequence[str]) -> list[str]:
    if isinstance(spec, int):
        if not 1 <= spec <= 26:
            raise ValueError("hosts(n) takes 1 to 26 hosts")
        return [chr(ord("a") + i) for i in range(spec)]
    labels = list(spec)
    if isinstance(spec, str) or not labels or len(labels) > 200:
        raise ValueError("hosts() takes a count or a list of 1 to 200 names")
    for label in labels:
        if not _LABEL.match(label) or label == "br":
            raise ValueError(f"host name {label!r}: lower-case letters, digits, '-' and '_' (not 'br')")
    if len(set(labels)) != len(labels):
        raise ValueError(f"host names repeat: {labels}")
    return labels


@contextlib.contextmanager
def hosts(spec: int | Sequence[str] = 2) -> Iterator[Network]:
    """Make the hosts (see the module docstring), yield the Network, tear it all down."""
    ok, reason = netns_available()
    if not ok:
        raise NetnsError(reason)
    remove_stale()
    network = Network(_labels(spec))
    # HTTP clients honour http_proxy: let the hosts' addresses bypass any proxy, as
    # netutil does for 127.0.0.1, for the length of the block.
    saved = {key: os.environ.get(key) for key in ("no_proxy", "NO_PROXY")}
    existing = [n for n in (saved["no_proxy"] or saved["NO_PROXY"] or "").split(",") if n]
    merged = ",".join(existing + [h.address for h in network.hosts] + [network.root_address])
    try:
        network.setup()
        os.environ["no_proxy"] = os.environ["NO_PROXY"] = merged
        yield network
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        network.teardown()
