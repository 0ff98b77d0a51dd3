"""`in_cidr` and `interface_network` compare a plain IPv4 address as numbers (every node's own
addresses and subnet.env, at 5,000 nodes) and answer exactly as ipaddress does, for every
form ipaddress takes or refuses."""

from __future__ import annotations

import ipaddress

import pytest

from flannel_bot.diagnosis.node_facts import _plain_ipv4, in_cidr, interface_network

ADDRESSES = [
    "10.244.3.1/24",
    "10.244.3.1",
    "10.244.4.0/24",
    "10.244.3.255/32",
    "10.0.0.1/0",
    "10.0.0.1/8",
    "0.0.0.0/0",
    "255.255.255.255/32",
    "10.244.3.1/33",
    "10.244.3.1/024",  # a prefix with a leading zero: ipaddress's reading
    "10.244.03.1/24",  # an octet with a leading zero: refused
    "10.244.3.256/24",
    "10.244.3/24",
    "10.244.3.1/255.255.255.0",  # a netmask
    "10.244.3.1/0.0.0.255",  # a host mask
    "fd00::1/64",
    "::ffff:10.244.3.1",
    " 10.244.3.1/24",
    "10.244.3.1/24 ",
    "",
    "junk",
    "\uff11\uff10.244.3.1/24",  # fullwidth digits
]
CIDRS = ["10.244.3.0/24", "10.244.0.0/16", "10.244.3.1/24", "0.0.0.0/0", "fd00::/64", "junk"]


def _reference_in(address: str, cidr: str) -> bool:
    try:
        ip = ipaddress.ip_interface(address).ip
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return ip in network


def _reference_network(address: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(address).network)
    except ValueError:
        return None


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_plain_ipv4_address_is_read_as_ipaddress_reads_it(address: str) -> None:
    for cidr in CIDRS:
        assert in_cidr(address, cidr) == _reference_in(address, cidr), (address, cidr)
    try:
        network: str | None = interface_network(address)
    except ValueError:
        network = None
    assert network == _reference_network(address)


def test_the_usual_addresses_take_the_numbers() -> None:
    assert _plain_ipv4("10.244.3.1/24") == (0x0AF40301, 24)
    assert _plain_ipv4("10.244.3.1") == (0x0AF40301, 32)
    assert _plain_ipv4("10.244.3.1/024") is None  # left to ipaddress
    assert interface_network("10.244.3.77/24") == "10.244.3.0/24"
    assert interface_network("10.244.3.77/0") == "0.0.0.0/0"
