"""Which webhook targets may be called: http(s) URLs whose every address is public.

Private, loopback, link-local, shared (CGNAT), multicast, reserved and unspecified addresses are refused
unless `allow_private` (WEBHOOK_ALLOW_PRIVATE) is set, so a job cannot make the farm call into its own
network. The gateway checks at submit; the webhook service checks again at every attempt and on every
connection it opens (a name that resolved to a public address at submit may resolve elsewhere later).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """A webhook target that may not be called; the message says why."""


def refused_address(address: str) -> str | None:
    """What kind of non-public address `address` (an IP literal) is, e.g. 'a loopback address', or None
    when it is a public address."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, hit in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("an unspecified address", ip.is_unspecified),
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
    ):
        if hit:
            return kind
    return None if ip.is_global else "not a public address"


def check_addresses(host: str, addresses: list[str], allow_private: bool) -> None:
    """Raise `TargetRefused` if any of `host`'s `addresses` is not public (unless `allow_private`)."""
    if not addresses:
        raise TargetRefused(f"{host} has no address")
    if allow_private:
        return
    for address in addresses:
        kind = refused_address(address)
        if kind is not None:
            what = f"{host} is {kind}" if host.strip("[]") == address else f"{host} resolves to {address}, {kind}"
            raise TargetRefused(f"{what}; webhooks must reach public addresses (unless WEBHOOK_ALLOW_PRIVATE=true)")


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself); `TargetRefused` when none."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise TargetRefused(f"{host} does not resolve ({error.strerror or error})") from None
    return sorted({str(info[4][0]) for info in infos})


def host_and_port(url: str) -> tuple[str, int]:
    """The host and port an http(s) URL connects to; `TargetRefused` for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. `[...]` that is no IPv6 address
        raise TargetRefused("the webhook URL's host is not a valid name or address") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("the webhook must be an http:// or https:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise TargetRefused("the webhook URL has an invalid port") from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, allow_private: bool) -> None:
    """Raise `TargetRefused` unless `url` is http(s) and every address of its host may be called."""
    host, port = host_and_port(url)
    check_addresses(host, await resolve(host, port), allow_private)
