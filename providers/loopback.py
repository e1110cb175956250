"""Whether a host is this machine: plain HTTP and Basic auth are allowed only there."""

from __future__ import annotations

import ipaddress


def is_loopback(host):
    """``localhost`` or a loopback address (IPv6 in brackets too)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
