"""Exempt networks that take in this server itself: a login from its own address (a local user,
a port forwarded through an approved login, a jump through it) would skip the phone."""

import ipaddress
from pathlib import Path

LOOPBACK = tuple(map(ipaddress.ip_network, ("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104")))
WHO = "anyone who gets onto this server (a local user, a forwarded port, a jump through it)"


def takes_in_server(network: str) -> str | None:
    """What of this server an exempt network takes in (loopback, or one of its own addresses),
    None if nothing."""
    try:
        exempt = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return None  # not a network at all: the drop-in says so
    loopback = next((n for n in LOOPBACK if n.version == exempt.version and exempt.overlaps(n)), None)
    if loopback is not None:
        return f"loopback ({loopback})"
    own = next((a for a in own_addresses() if a.version == exempt.version and a in exempt), None)
    return f"this server's own address {own}" if own is not None else None


def own_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This machine's addresses as the kernel lists them: IPv4's local /32 entries of the routing
    trie, and IPv6's interface addresses (none where /proc does not say)."""
    found: list = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        found += [
            ipaddress.IPv4Address(above.split("|--", 1)[1].strip())
            for above, line in zip(lines, lines[1:], strict=False)
            if line.split() == ["/32", "host", "LOCAL"] and "|--" in above
        ]
    except (OSError, ValueError):
        pass  # no IPv4, or no /proc: loopback is still refused
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            found.append(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except (OSError, ValueError, IndexError):
        pass  # no IPv6
    return list(dict.fromkeys(found))
