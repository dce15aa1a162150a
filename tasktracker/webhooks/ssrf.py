"""The SSRF guard of webhook targets (api-contract.md v1.1, "Webhooks").

A webhook URL is an address the server POSTs to on a user's behalf, so it must not
reach the server's own network: targets whose host resolves to a loopback, private,
link-local, multicast, reserved, unspecified or otherwise non-global address
(Python's :mod:`ipaddress` flags; IPv4-mapped, NAT64 and 6to4 IPv6 forms are checked
as the IPv4 address they carry) are refused unless ``allow_private``
(``WEBHOOK_ALLOW_PRIVATE_TARGETS=true``, for tests and local use).

The check runs at create/update (the service answers 422) and again at every send
(against DNS rebinding). At send time the request goes to the very address that was
checked (:meth:`Target.pinned`): the URL carries the IP, ``Host`` and the TLS SNI /
certificate check carry the name, so a second DNS answer can never slip in between
the check and the connect. Redirects are never followed (the sender's rule), so a
3xx cannot point elsewhere either.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeTarget(ValueError):
    """The URL is not an acceptable webhook target; ``str(exc)`` says why (shown to
    the user as the 422 detail of ``url``, and stored as a failed attempt's error)."""


@dataclass(frozen=True)
class Target:
    """A checked target: the URL's parts and the addresses its host resolved to
    (all allowed; the first is the one to connect to)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    def pinned(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """``(url, headers, extensions)`` for httpx that connect to ``addresses[0]``
        while naming ``host``: the URL with the IP in place of the host, a ``Host``
        header, and for HTTPS the ``sni_hostname`` request extension (httpcore uses it
        as the TLS ``server_hostname``, so SNI and certificate verification still
        concern the name)."""
        parts = urlsplit(self.url)
        ip = self.addresses[0]
        ip_text = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = ip_text if parts.port is None else f"{ip_text}:{parts.port}"
        host_text = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host_text if self.port == _DEFAULT_PORTS[self.scheme] else f"{host_text}:{self.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        extensions = {"sni_hostname": self.host} if self.scheme == "https" and not _is_ip(self.host) else {}
        return url, {"Host": host_header}, extensions


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a webhook URL, or :class:`UnsafeTarget`.

    Rules: scheme ``http`` or ``https``; a host; no user-info (credentials in a URL
    leak into logs: receivers verify the signature instead); at most 2048 chars."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise UnsafeTarget("Must be an http(s) URL of at most 2048 characters.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise UnsafeTarget("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise UnsafeTarget("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("Credentials in the URL are not allowed.")
    return parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be a webhook target (``"loopback"``, ``"private"``...), or
    None when it is a public unicast address."""
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded)
    for flag in ("is_loopback", "is_unspecified", "is_link_local", "is_multicast",
                 "is_private", "is_reserved"):
        if getattr(ip, flag):
            return flag[3:].replace("_", "-")
    if not ip.is_global:
        return "non-global"
    return None


def check_target(url: str, *, allow_private: bool = False, resolver: Resolver | None = None) -> Target:
    """Parse ``url``, resolve its host (``resolver`` has ``socket.getaddrinfo``'s
    signature) and check every address it resolves to.

    Returns the :class:`Target`. Raises :class:`UnsafeTarget` when the URL is
    malformed, the host does not resolve, or any address is refused (one bad answer
    among several is enough to refuse: a client may pick any of them). With
    ``allow_private`` every resolvable address is accepted.
    """
    scheme, host, port = parse_url(url)
    try:
        infos = (resolver or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeTarget(f"The host {host!r} does not resolve ({exc}).") from None
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])  # drop an IPv6 zone id
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeTarget(f"The host {host!r} does not resolve.")
    if not allow_private:
        for ip in addresses:
            reason = address_refusal(ip)
            if reason is not None:
                raise UnsafeTarget(f"The host {host!r} resolves to {ip}, a {reason} address: refused.")
    return Target(url=url.strip(), scheme=scheme, host=host, port=port, addresses=tuple(addresses))
