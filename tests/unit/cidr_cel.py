"""Kubernetes' CEL CIDR library for cel-python, as the CRD tests evaluate our rules with it.

Modelled on k8s.io/apiserver/pkg/cel/library/cidr.go (Kubernetes 1.36; in the CRD environment
since 1.30, apiserver/pkg/cel/environment/base.go): `isCIDR(string)`, `cidr(string)`
(Go's netip.ParsePrefix: no leading zeros, prefix length in range; an IPv4-mapped IPv6
address is an error; bits after the prefix are kept, so `cidr('10.0.0.1/8')` is valid and
differs from its `masked()`), `<CIDR>.masked()`, `<CIDR>.containsCIDR(<CIDR or string>)`
(`Overlaps && bits <= other bits`: false across address families), and `==` on CIDRs (same
address and prefix length). No code of theirs is copied.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from celpy import celtypes

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CIDRParseError(ValueError):
    pass


@dataclass(frozen=True)
class Cidr:
    """A prefix as written: the address (host bits included) and the prefix length."""

    address: Address
    bits: int

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network((self.address, self.bits), strict=False)


def parse(text: str) -> Cidr:
    address_text, slash, bits_text = str(text).partition("/")
    if not slash or not bits_text.isdigit() or (len(bits_text) > 1 and bits_text[0] == "0"):
        raise CIDRParseError(f"network address parse error: {text!r}")
    try:
        address = ipaddress.ip_address(address_text)  # refuses leading zeros, zones
    except ValueError as exc:
        raise CIDRParseError(str(exc)) from exc
    if int(bits_text) > address.max_prefixlen:
        raise CIDRParseError(f"prefix length out of range: {text!r}")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise CIDRParseError(f"IPv4-mapped IPv6 address {text!r} is not allowed")
    return Cidr(address, int(bits_text))


def is_cidr(text: Any) -> celtypes.BoolType:
    try:
        parse(text)
    except CIDRParseError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def cidr(text: Any) -> Cidr:
    return parse(text)  # an error, as in Go, for what isCIDR refuses


def masked(value: Cidr) -> Cidr:
    return Cidr(value.network.network_address, value.bits)


def contains_cidr(value: Cidr, other: Any) -> celtypes.BoolType:
    inner = other if isinstance(other, Cidr) else parse(other)
    outer_net, inner_net = value.network, inner.network
    same_family = outer_net.version == inner_net.version
    return celtypes.BoolType(same_family and outer_net.overlaps(inner_net) and value.bits <= inner.bits)  # type: ignore[arg-type]


FUNCTIONS = {"isCIDR": is_cidr, "cidr": cidr, "masked": masked, "containsCIDR": contains_cidr}
