"""Separate "servers" for tests: a network namespace per worker, reaching the databases over veth.

PostgreSQL and MariaDB listen on 127.0.0.1 only, which a namespace cannot reach. So each
:class:`Server` gets

- a network namespace ``bo-<pid>-<n>`` with its loopback up;
- a veth pair, host side ``10.213.<n>.1/30`` and namespace side ``10.213.<n>.2/30``;
- a TCP forwarder in the host namespace (threads in the test process) listening on the host-side
  address and forwarding to 127.0.0.1, so ``server.url(url)`` is the database URL as seen from
  inside the namespace.

:meth:`Server.cut` takes the host end of the link down: the worker's packets are dropped
silently (the neighbour entries are permanent, so no "No route to host" either), its open
connections hang and new ones time out, as when a server loses its network. By default the
forwarder also closes the database sessions it holds for that server, as the database does once
its TCP keepalive gives up on a silent peer (otherwise a transaction left open by the cut-off
worker would keep its row locks forever). :meth:`Server.restore` brings the link back and
resets the worker's old connections at once, so it hears that its sessions are gone.

Names carry the test process's pid, so concurrent test sessions do not collide, and
:func:`remove_stale` deletes the namespaces of processes that are gone (a crashed run). Everything
stays on this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

#: Prefix of every namespace this harness creates: ``bo-<pid>-<n>``.
PREFIX = "bo-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
# Serializes the choice of a free subnet between concurrent test processes.
_LOCK_FILE = "/tmp/bilevel-optuna-netns.lock"
_SUBNET = "10.213.{n}"
_CHUNK = 64 * 1024


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here (not root, no ``ip``, or the kernel refuses)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as err:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed") from err
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def _namespaces() -> list[str]:
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the ``bo-<pid>-<n>`` namespaces whose creating process is gone; their names."""
    removed = []
    for name in _namespaces():
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def check_available() -> None:
    """Raise :class:`NetnsUnavailable` with the reason when namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (ip netns add)")
    probe = f"{PREFIX}{os.getpid()}-probe"
    _ip("netns", "add", probe)
    _ip("netns", "del", probe, check=False)


class _Forwarder:
    """Accepts on ``listen`` and pipes every connection to ``target``; can drop them all."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._sock = socket.create_server(listen)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._upstream: set[socket.socket] = set()
        # Worker-side sockets whose database session was dropped during a cut, closed (with a
        # reset) once the link is back, so the worker hears of it at once.
        self._held: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                self._upstream.add(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                keep = [sock for sock in (src, dst) if sock in self._held]
            self._drop(*[sock for sock in (src, dst) if sock not in keep])

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._open.discard(sock)
                self._upstream.discard(sock)
                self._held.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_all(self) -> int:
        """Close every forwarded connection (both ends); how many sockets were open."""
        with self._lock:
            socks = list(self._open)
        self._drop(*socks)
        return len(socks)

    def sever(self) -> int:
        """End every database session now, holding the worker-side sockets; how many."""
        with self._lock:
            upstream = list(self._upstream)
            self._held.update(self._open - self._upstream)
        self._drop(*upstream)
        return len(upstream)

    def reset_held(self) -> None:
        """Close the held worker-side sockets with a reset (the link must be up again)."""
        with self._lock:
            held = list(self._held)
        for sock in held:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._drop(*held)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self.drop_all()
        self._thread.join(timeout=2)


class Server:
    """A worker's own network namespace, linked to the host's databases by a veth pair.

    Create it with :func:`server` (or :meth:`create`) so it is always removed. ``ports`` are the
    127.0.0.1 ports forwarded (by default PostgreSQL's and MariaDB's).
    """

    def __init__(self, n: int, ports: Sequence[int]) -> None:
        self.n = n
        self.name = f"{PREFIX}{os.getpid()}-{n}"
        self.host_ip = _SUBNET.format(n=n) + ".1"
        self.ns_ip = _SUBNET.format(n=n) + ".2"
        self._host_dev = f"bo{n}h"
        self._ns_dev = f"bo{n}n"
        self._ports = tuple(ports)
        self._forwarders: dict[int, _Forwarder] = {}
        self.is_cut = False

    @classmethod
    def create(cls, ports: Sequence[int] = (5432, 3306)) -> Server:
        """Make the namespace, the veth pair and the forwarders; raise NetnsUnavailable."""
        with open(_LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_stale()
            used = set(re.findall(r"\b10\.213\.(\d+)\.", _ip("-o", "addr").stdout))
            used |= {m.group(2) for m in map(_NAME.match, _namespaces()) if m}
            free = [n for n in range(1, 255) if str(n) not in used]
            if not free:
                raise NetnsUnavailable("no free 10.213.<n>.0/30 subnet left for a namespace")
            self = cls(free[0], ports)
            try:
                self._setup()
            except BaseException:
                self.close()
                raise
        return self

    def _setup(self) -> None:
        _ip("netns", "add", self.name)
        self.ip_in_ns("link", "set", "lo", "up")
        _ip("link", "add", self._host_dev, "type", "veth", "peer", "name", self._ns_dev)
        _ip("link", "set", self._ns_dev, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self._host_dev)
        _ip("link", "set", self._host_dev, "up")
        self.ip_in_ns("addr", "add", f"{self.ns_ip}/30", "dev", self._ns_dev)
        self.ip_in_ns("link", "set", self._ns_dev, "up")
        # Permanent neighbour entries: with the link down, packets vanish silently (as on a
        # real network failure) instead of failing fast with "No route to host" once ARP fails.
        host_mac = _mac(_ip("-o", "link", "show", self._host_dev).stdout)
        ns_mac = _mac(self.ip_in_ns("-o", "link", "show", self._ns_dev).stdout)
        self.ip_in_ns(
            "neigh", "replace", self.host_ip, "lladdr", host_mac, "dev", self._ns_dev,
            "nud", "permanent",
        )  # fmt: skip
        _ip(
            "neigh", "replace", self.ns_ip, "lladdr", ns_mac, "dev", self._host_dev,
            "nud", "permanent",
        )  # fmt: skip
        for port in self._ports:
            self._forwarders[port] = _Forwarder((self.host_ip, 0), ("127.0.0.1", port))

    def ip_in_ns(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _ip("-n", self.name, *args)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the namespace to completion."""
        return subprocess.run(self.command(argv), **kwargs)

    def address(self, port: int) -> tuple[str, int]:
        """Where, inside the namespace, 127.0.0.1:``port`` on the host is reached."""
        return self.host_ip, self._forwarders[port].port

    def url(self, url: str) -> str:
        """A database URL on 127.0.0.1 (or localhost) rewritten as seen from the namespace."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"only URLs on 127.0.0.1 can be forwarded, not {url!r}")
        host, port = self.address(parsed.port or _default_port(parsed.get_backend_name()))
        return parsed.set(host=host, port=port).render_as_string(hide_password=False)

    def cut(self, *, drop_sessions: bool = True) -> None:
        """Cut the namespace off: its packets are dropped from now on.

        Args:
            drop_sessions: Also close the database sessions the forwarder holds for this
                server, as the database would once its keepalive gave up on the silent peer.
        """
        _ip("link", "set", self._host_dev, "down")
        self.is_cut = True
        if drop_sessions:
            for forwarder in self._forwarders.values():
                forwarder.sever()

    def restore(self) -> None:
        """Bring the link back up."""
        _ip("link", "set", self._host_dev, "up")
        self.is_cut = False
        for forwarder in self._forwarders.values():
            forwarder.reset_held()

    def close(self) -> None:
        """Stop the forwarders and delete the namespace (which removes the veth pair)."""
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self._host_dev, check=False)


def _mac(link: str) -> str:
    match = re.search(r"link/ether ([0-9a-f:]{17})", link)
    if match is None:
        raise NetnsUnavailable(f"no MAC address in `ip link` output: {link.strip()}")
    return match.group(1)


def _default_port(backend: str) -> int:
    return {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}[backend]


@contextlib.contextmanager
def server(ports: Sequence[int] = (5432, 3306)) -> Iterator[Server]:
    """A :class:`Server` for the duration of the block, removed however the block ends."""
    made = Server.create(ports)
    try:
        yield made
    finally:
        made.close()
