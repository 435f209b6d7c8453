"""Whether GitHub.com can deliver webhooks to an address, judged from the address alone.

Only a warning is drawn from this, never a refusal: a GitHub Enterprise Server on the same
network reaches private addresses that GitHub.com cannot.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Shared address space (RFC 6598): a carrier's NAT, never reachable from the internet.
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def webhook_warning(url: str) -> str | None:
    """Why webhooks sent to `url` would not arrive from GitHub.com, or only unencrypted, as
    one sentence; None when nothing in the address says so."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    kind = _local_kind(host)
    if kind is not None:
        return f"GitHub.com cannot deliver webhooks to {host}: it is {kind}"
    if parts.scheme == "http":
        return f"GitHub would send webhooks to {host} unencrypted: the address is plain http"
    return None


def _local_kind(host: str) -> str | None:
    """What kind of local address `host` is, or None for what may be a public one."""
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback address"
    if host.endswith(".local"):
        return "a local network name (.local)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # A name with no dot resolves only on its own network (a search domain, /etc/hosts).
        return None if "." in host else "a name only this network resolves"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.version == 4 and address in CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if address.is_private or address.is_unspecified:
        return "a private network address"
    return None
