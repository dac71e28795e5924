"""Which network addresses a URL written by an LLM may reach (protection against SSRF).

An LLM that anyone may have prompted writes the URLs ``poll_url`` requests, so
a URL must not become a way into the operator's network. :class:`NetworkPolicy`
decides, address by address:

- only ``http`` and ``https``;
- loopback, private, link-local, shared (CGNAT), multicast, reserved,
  unspecified, documentation and cloud-metadata addresses are refused, for IPv4
  and IPv6, including IPv4 addresses carried inside IPv6 (``::ffff:127.0.0.1``,
  6to4, NAT64);
- numeric host spellings are read the way the system resolver reads them
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` are all
  127.0.0.1), so no spelling slips past the check;
- a host name is resolved once, every address it resolves to is checked, and
  the connection goes to an address that was checked (see
  :meth:`NetworkPolicy.resolve`), so a second DNS answer cannot swap in another;
- the operator may allow named hosts (``status.internal``, ``*.corp.example``)
  or address ranges (``10.1.0.0/16``, ``127.0.0.1``) explicitly; that is how a
  deployment reaches its own services, and how the tests reach their local servers.

httpx is imported only where a URL is parsed, so an engine whose jobs never
name a URL does not load it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, TypeAlias

import anyio

from ..core.errors import AddressRefused, ConfigurationError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ALLOWED_SCHEMES",
    "AddressRefused",
    "IPAddress",
    "NetworkPolicy",
    "classify_address",
    "parse_http_url",
    "parse_ip_literal",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The only URL schemes a checker may request.
ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
_MAX_URL_CHARS = 2048


def _nets(*specs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(spec) for spec in specs)


# Checked in order; the first match names the reason. Metadata first, for clearer messages.
_V4_REFUSED: Final[tuple[tuple[tuple[IPNetwork, ...], str], ...]] = (
    (_nets("169.254.169.254/32", "169.254.170.2/32", "100.100.100.200/32",
           "168.63.129.16/32", "192.0.0.192/32"), "a cloud metadata address"),
    (_nets("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_nets("127.0.0.0/8"), "a loopback address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_nets("169.254.0.0/16"), "a link-local address"),
    (_nets("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_nets("224.0.0.0/4"), "a multicast address"),
    (_nets("255.255.255.255/32"), "the broadcast address"),
    (_nets("240.0.0.0/4"), "a reserved address"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "a documentation address"),
    (_nets("198.18.0.0/15"), "a benchmarking address"),
    (_nets("192.0.0.0/24", "192.88.99.0/24"), "a special-purpose address"),
)
_V6_REFUSED: Final[tuple[tuple[tuple[IPNetwork, ...], str], ...]] = (
    (_nets("fd00:ec2::254/128"), "a cloud metadata address"),
    (_nets("::/128"), "the unspecified address"),
    (_nets("::1/128"), "a loopback address"),
    (_nets("::/96"), "an IPv4-compatible (deprecated) address"),
    (_nets("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_nets("100::/64"), "a discard-only address"),
    (_nets("2001::/32"), "a Teredo tunnel address"),
    (_nets("2001:db8::/32", "3fff::/20"), "a documentation address"),
    (_nets("fc00::/7"), "a unique-local (private) address"),
    (_nets("fe80::/10"), "a link-local address"),
    (_nets("fec0::/10"), "a site-local (deprecated) address"),
    (_nets("ff00::/8"), "a multicast address"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, translated, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _SIIT:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def classify_address(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is one.

    IPv6 addresses that carry an IPv4 address are judged by the IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = classify_address(inner)
            return f"{reason}, inside an IPv6 address" if reason else None
        table = _V6_REFUSED
    else:
        table = _V4_REFUSED
    for networks, reason in table:
        if any(address in network for network in networks):
            return reason
    if not address.is_global:
        return "not a public address"
    return None


# -- numeric host spellings -----------------------------------------------------------------

_NUMERIC_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


def _numeric_value(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        if not set(part) <= set("01234567"):
            raise ValueError(f"{part!r} is not an octal number")
        return int(part, 8)
    return int(part, 10)


def _parse_numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` the way inet_aton does (``127.1``, ``0x7f.1``, ``2130706433``).

    Returns None when ``host`` is a name; raises ValueError when it looks numeric
    (its last label is a number) but is no valid address, as browsers do.
    """
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]  # one trailing dot is allowed: "127.0.0.1."
    if not parts or not _NUMERIC_PART.fullmatch(parts[-1]):
        return None
    if len(parts) > 4 or not all(_NUMERIC_PART.fullmatch(part) for part in parts):
        raise ValueError(f"{host!r} is neither a host name nor a valid IPv4 address")
    values = [_numeric_value(part) for part in parts]
    *head, last = values
    if any(value > 255 for value in head) or last >= 256 ** (5 - len(values)):
        raise ValueError(f"{host!r} is out of range for an IPv4 address")
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


@functools.lru_cache(maxsize=4096)
def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, or None when ``host`` is a name to resolve.

    Accepts bracketed or bare IPv6 (a zone such as ``%25eth0`` is dropped) and
    every IPv4 spelling the system resolver accepts. Raises ValueError for a
    host that looks numeric but is no valid address. Answers are remembered:
    every check and every connection of a poll reads its host again.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        text = urllib.parse.unquote(text).split("%", 1)[0]
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
    return _parse_numeric_ipv4(text)


def _connectable(address: IPAddress) -> IPAddress:
    """The address to dial: an IPv4-mapped IPv6 address is dialled as the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# -- URLs ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse_http_url(raw: str) -> httpx.URL:
    """Parse ``raw`` as an absolute http(s) URL; numeric IPv4 hosts become dotted quads.

    Raises :class:`AddressRefused` with a reason for anything else. Only the
    form of the URL is checked here; :meth:`NetworkPolicy.check_url` judges its host.
    Answers are remembered (URLs are immutable), since a poll parses its URL at
    every check.
    """
    import httpx

    if len(raw) > _MAX_URL_CHARS:
        raise AddressRefused(f"is longer than {_MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise AddressRefused("must not contain spaces or control characters")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        # httpx refuses some numeric spellings ("0177.0.0.1") that resolvers accept;
        # rewrite those to the address they mean, refuse everything else.
        url = _rewrite_numeric_host(raw, exc)
    scheme = url.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        raise AddressRefused(f"must use http or https, not the scheme {shown}")
    if not url.host:
        raise AddressRefused("must name a host, as in https://example.com/health")
    try:
        literal = parse_ip_literal(url.host)
    except ValueError as exc:
        raise AddressRefused(str(exc)) from None
    if isinstance(literal, ipaddress.IPv4Address) and url.host != str(literal):
        url = url.copy_with(host=str(literal))
    return url


def _rewrite_numeric_host(raw: str, error: Exception) -> httpx.URL:
    import httpx

    invalid = AddressRefused(f"is not a valid URL: {error}")
    try:
        parts = urllib.parse.urlsplit(raw)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise invalid from None
    if not host:
        raise invalid
    try:
        literal = _parse_numeric_ipv4(host)
    except ValueError as exc:
        raise AddressRefused(str(exc)) from None
    if literal is None:
        raise invalid
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + str(literal)
    if port is not None:
        netloc += f":{port}"
    try:
        url = httpx.URL(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    except httpx.InvalidURL:
        raise invalid from None
    if url.host != str(literal):
        raise invalid
    return url


# -- the policy --------------------------------------------------------------------------------

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_PATTERN = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")


def _normalise_name(host: str) -> str:
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


class NetworkPolicy:
    """What poll_url may reach: public addresses, plus what the operator allowed.

    :param allow: host names (``status.internal``; ``*.corp.example`` for every
        name under it) and addresses or CIDR ranges (``127.0.0.1``, ``10.0.0.0/8``,
        ``fd00::/8``). Raises :class:`~circleback.errors.ConfigurationError` for an entry
        that is neither.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in allow:
            text = entry.strip().lower()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            try:
                literal = parse_ip_literal(text) if "/" not in text else None
            except ValueError:
                literal = None
            if literal is not None:
                networks.append(ipaddress.ip_network(literal))
                continue
            name = _normalise_name(text)
            if "/" in text or not _HOST_PATTERN.fullmatch(name):
                raise ConfigurationError(
                    f"allow_networks entry {entry!r} is neither a host name nor an "
                    "address or CIDR range"
                )
            if name.startswith("*."):
                suffixes.append(name[1:])
            else:
                names.add(name)
        self._networks = tuple(networks)
        self._names = frozenset(names)
        self._suffixes = tuple(suffixes)

    @classmethod
    def from_allow_list(cls, allow: tuple[str, ...]) -> NetworkPolicy:
        """A shared policy for an allow-list (settings are frozen, so it is cached)."""
        return _cached_policy(allow)

    def allows_name(self, host: str) -> bool:
        """Whether the operator allowed the host name ``host`` itself."""
        name = _normalise_name(host)
        return name in self._names or any(name.endswith(suffix) for suffix in self._suffixes)

    def _allows_address(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None:
                candidates.append(inner)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self._networks
        )

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``address`` (which ``host`` names or resolved to) is refused, or None.

        The reason is a noun phrase such as ``"a loopback address"``.
        """
        if self.allows_name(host) or self._allows_address(address):
            return None
        return classify_address(address)

    def check_url(self, url: httpx.URL) -> IPAddress | None:
        """Refuse ``url`` for its scheme or its literal address; returns that address, if any.

        A host name passes here; it is judged after resolution, in :meth:`resolve`.
        """
        scheme = url.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise AddressRefused(f"the scheme {scheme!r} is not allowed (only http and https)")
        if not url.host:
            raise AddressRefused("the URL names no host")
        try:
            literal = parse_ip_literal(url.host)
        except ValueError as exc:
            raise AddressRefused(str(exc)) from None
        if literal is not None:
            reason = self.refusal(url.host, literal)
            if reason:
                raise AddressRefused(f"{literal} is {reason}")
        return literal

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` once and return the addresses to connect to, all of them checked.

        A literal address is taken as it is; a name goes through the system
        resolver without blocking the event loop. Raises :class:`AddressRefused`
        when any of the addresses is refused (a name that points at both a public
        and a private address is refused whole), and :class:`OSError` when the
        name does not resolve.
        """
        name = _normalise_name(host)
        try:
            literal = parse_ip_literal(name)
        except ValueError as exc:
            raise AddressRefused(str(exc)) from None
        addresses: list[IPAddress]
        if literal is not None:
            addresses = [literal]
        else:
            infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            addresses = []
            for family, _, _, _, sockaddr in infos:
                if family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                address = ipaddress.ip_address(str(sockaddr[0]))
                if address not in addresses:
                    addresses.append(address)
            if not addresses:
                raise OSError(f"{name} resolved to no IP address")
        for address in addresses:
            reason = self.refusal(name, address)
            if reason:
                if literal is not None:
                    raise AddressRefused(f"{address} is {reason}")
                raise AddressRefused(f"{name} resolves to {address}, which is {reason}")
        return [_connectable(address) for address in addresses]


@functools.lru_cache(maxsize=32)
def _cached_policy(allow: tuple[str, ...]) -> NetworkPolicy:
    return NetworkPolicy(allow)
