"""Address ranges the renderer and the admission guardrails keep tenants away from.

Cloud metadata endpoints (and the policy's `deniedEgressCidrs`) are never reachable by a
tenant egress; the cluster's pod and service ranges are never named in an ipBlock of a tenant's
own NetworkPolicy, unless the Organization documents an exception.
"""

from __future__ import annotations

import functools
import ipaddress

from tenantry.api.policy import TenancyPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata endpoints hand out node credentials. They are carved out of every egress
# whatever the policy lists: AWS, GCP, Azure and OCI (169.254.169.254), AWS over IPv6
# (fd00:ec2::254), GCP over IPv6 (fd20:ce::254), Alibaba Cloud (100.100.100.200).
ALWAYS_DENIED_EGRESS_CIDRS: tuple[str, ...] = (
    "169.254.169.254/32",
    "100.100.100.200/32",
    "fd00:ec2::254/128",
    "fd20:ce::254/128",
)
# An IPv4 address is also reachable as IPv6 through these prefixes: IPv4-mapped (::ffff:a.b.c.d,
# dual-stack sockets) and the NAT64 well-known prefix (64:ff9b::a.b.c.d).
_IPV4_IN_IPV6 = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))


def denied_networks(policy: TenancyPolicy) -> list[IPNetwork]:
    """Every network no tenant egress may reach: the policy's, the metadata endpoints, and the
    IPv6 spellings of each IPv4 one. Validation refuses egress inside them; rendering carves
    them out of any wider egress."""
    return list(_denied_networks(tuple(policy.spec.network.denied_egress_cidrs)))


@functools.lru_cache(maxsize=64)
def _denied_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    found: set[IPNetwork] = set()
    for text in (*ALWAYS_DENIED_EGRESS_CIDRS, *cidrs):
        net = ipaddress.ip_network(text)
        found.add(net)
        if isinstance(net, ipaddress.IPv4Network):
            for prefix in _IPV4_IN_IPV6:
                base = int(prefix.network_address) | int(net.network_address)
                found.add(ipaddress.IPv6Network((base, 96 + net.prefixlen)))
    return tuple(sorted(found, key=lambda n: (n.version, n)))
