"""Test hosts in Linux network namespaces, for tests of what crosses a network.

A :class:`NetnsHost` is a namespace joined to this machine by a veth pair: this side has
``host_ip``, the namespace ``ns_ip``. A server listening on ``host_ip`` is reachable from a
process started in the namespace (:meth:`NetnsHost.command`); :meth:`cut` takes the link
down (packets are dropped, connections hang as across a real partition) and :meth:`heal`
brings it back. Needs root and iproute2; :func:`netns_problem` says why not, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from types import TracebackType


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"rbprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHost:
    """A network namespace with one veth link to this machine (a /30 of 10.213.x.0)."""

    def __init__(self, subnet: int = 7) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"rb{tag}"
        self._outer = f"rbo{tag}"
        self._inner = f"rbi{tag}"
        self.host_ip = f"10.213.{subnet}.1"
        self.ns_ip = f"10.213.{subnet}.2"

    def __enter__(self) -> NetnsHost:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self._outer, "type", "veth", "peer", "name", self._inner)
            _ip("link", "set", self._inner, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self._outer)
            _ip("link", "set", self._outer, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self._inner)
            _ip("-n", self.name, "link", "set", self._inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Partition: the namespace can no longer reach this machine, nor it the namespace."""
        _ip("link", "set", self._outer, "down")

    def heal(self) -> None:
        _ip("link", "set", self._outer, "up")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subprocess.run(["ip", "link", "del", self._outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
