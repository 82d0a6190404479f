"""What ``/proc`` and the kernel say about a process: its listening sockets, whether it is
``node`` and catches a signal, and the inspector options it was started with.

Used by the inspector mode (:mod:`memdiag.processes.inspector`) to make sure it talks
only to the inspector of the process it means, on loopback, and signals only a ``node``
that handles ``SIGUSR1``.
"""

from __future__ import annotations

import os
import socket
import struct

from .._logging import get_logger
from ..probes._io import read_bytes
from ..probes.process import read_cmdline
from ..units import MIB
from .cdp import InspectorError, loopback_host
from .sanitize import split_node_options

__all__ = [
    "DEFAULT_DEBUG_PORT",
    "catches_signal",
    "inspector_options",
    "is_loopback_ip",
    "is_node",
    "listener_of",
    "owns_socket",
    "tcp_listeners",
]

log = get_logger("memdiag.processes")
DEFAULT_DEBUG_PORT = 9229  # where node opens its inspector unless told otherwise


# -- /proc: who listens where -------------------------------------------------------------


def _parse_addr(hexaddr: str) -> tuple[str, int]:
    ip_hex, _, port_hex = hexaddr.partition(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port_hex, 16)


def tcp_listeners(pid: int) -> dict[int, tuple[str, int]]:
    """``{inode: (ip, port)}`` of every listening TCP socket in this network namespace.

    Asks the kernel through ``NETLINK_SOCK_DIAG`` for listening sockets only (what ``ss``
    does; 0.3 ms here); ``/proc/PID/net/tcp`` lists every socket on the host and took
    6 ms per file, so it is only the fallback.
    """
    try:
        return _netlink_listeners()
    except OSError as exc:
        log.debug("sock_diag netlink failed (%r); reading /proc/%d/net/tcp", exc, pid)
    out: dict[int, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        data = read_bytes(f"/proc/{pid}/net/{name}", 64 * 1024 * 1024)
        for line in (data or b"").decode("ascii", "replace").splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "0A":  # TCP_LISTEN
                try:
                    out[int(f[9])] = _parse_addr(f[1])
                except ValueError:
                    continue
    return out


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NLMSG_DONE = 4, 20, 2, 3
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_TCP_LISTEN = 10


def _netlink_listeners() -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(1.0)
        for family in (socket.AF_INET, socket.AF_INET6):
            # struct inet_diag_req_v2: family, protocol, ext, pad, states, a zeroed sockid.
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
            sock.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0) + req)
            while not _read_diag(sock.recv(1 << 16), out):
                pass
    return out


def _read_diag(data: bytes, out: dict[int, tuple[str, int]]) -> bool:
    """Add the sockets in one netlink datagram to ``out``; True at the end of the dump."""
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR or length < 16:
            raise OSError("sock_diag netlink answered with an error")
        body = off + 16  # struct inet_diag_msg: family at 0, sport at 4, src at 8, inode at 68
        family = data[body]
        raw = data[body + 8 : body + 8 + (4 if family == socket.AF_INET else 16)]
        port = struct.unpack_from("!H", data, body + 4)[0]
        out[struct.unpack_from("=I", data, body + 68)[0]] = (socket.inet_ntop(family, raw), port)
        off += (length + 3) & ~3
    return False


def owns_socket(pid: int, inode: int) -> bool:
    want = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == want:
                return True
        except OSError:
            continue
    return False


def is_loopback_ip(ip: str) -> bool:
    try:
        loopback_host(ip.removeprefix("::ffff:"))
        return True
    except InspectorError:
        return False


def listener_of(pid: int, port: int, listeners: dict[int, tuple[str, int]] | None = None) -> tuple[str, int] | None:
    """``(ip, inode)`` of the socket listening on ``port`` if ``pid`` holds it; else ``None``.

    Raises:
        InspectorError: another process listens on that port.
    """
    listeners = tcp_listeners(pid) if listeners is None else listeners
    found = [(ip, inode) for inode, (ip, p) in listeners.items() if p == port]
    if not found:
        return None
    for ip, inode in found:
        if owns_socket(pid, inode):
            return ip, inode
    raise InspectorError(f"port {port} is held by another process, not by node pid {pid}")


# -- /proc: what kind of process, with which inspector options ----------------------------


def catches_signal(pid: int, signum: int) -> bool:
    data = read_bytes(f"/proc/{pid}/status", 65536) or b""
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def is_node(pid: int) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        exe = ""
    comm = (read_bytes(f"/proc/{pid}/comm", 256) or b"").decode("utf-8", "replace").strip()
    return exe.startswith("node") or comm.startswith("node")


def inspector_options(pid: int) -> tuple[bool, str, int]:
    """``(active, host, port)`` from the process's ``NODE_OPTIONS`` and command line.

    ``active``: started with ``--inspect``/``--inspect-brk``/``--inspect-wait``. Later
    options win, as in node (command line after ``NODE_OPTIONS``). Program arguments
    after the script are read too: if they look like inspector options, the answer is
    only more cautious.
    """
    words: list[str] = []
    environ = read_bytes(f"/proc/{pid}/environ", MIB) or b""
    for item in environ.split(b"\0"):
        if item.startswith(b"NODE_OPTIONS="):
            words += split_node_options(item[len(b"NODE_OPTIONS=") :].decode("utf-8", "replace"))
    words += (read_cmdline(pid, limit=MIB) or [])[1:]
    active, host, port = False, "127.0.0.1", DEFAULT_DEBUG_PORT
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if name in ("--inspect", "--inspect-brk", "--inspect-wait", "--inspect-port", "--debug-port"):
            active = active or name not in ("--inspect-port", "--debug-port")
            if not eq and name in ("--inspect-port", "--debug-port") and i + 1 < len(words):
                value, i = words[i + 1], i + 1
            if value:
                host, port = _host_port(value, host, port)
        i += 1
    return active, host, port


def _host_port(value: str, host: str, port: int) -> tuple[str, int]:
    if value.isdigit():
        return host, int(value)
    if value.startswith("["):
        h, _, rest = value[1:].partition("]")
        return h, int(rest[1:]) if rest[1:].isdigit() else port
    if value.count(":") == 1:
        h, _, p = value.partition(":")
        return h, int(p) if p.isdigit() else port
    return value, port
