"""Is this host the loopback interface? One answer for every part of memdiag.

Only ``localhost`` (any case) and IPv4/IPv6 loopback literals (brackets and an IPv6
zone allowed) count: any other name is not loopback here, since a resolver, a hosts
file or a later DNS change could send it anywhere. Callers that bind a socket
themselves and may resolve a name (the HTTP server) check the resolved addresses too.
"""

from __future__ import annotations

import ipaddress

__all__ = ["loopback_ip"]


def loopback_ip(host: str) -> str | None:
    """The loopback IP literal ``host`` stands for, or None if it is not loopback.

    >>> loopback_ip("localhost"), loopback_ip("[::1]"), loopback_ip("10.0.0.1")
    ('127.0.0.1', '::1', None)
    """
    bare = host.strip().strip("[]")
    if bare.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None
