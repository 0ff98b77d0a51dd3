"""`parse_links` decodes `ip -d -j addr` into only the fields it reads (the thirty others of a
link skipped by the decoder); what it answers is what the general path answers, on the lab's
real outputs, the generated scale outputs and odd shapes alike."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from flannel_bot.diagnosis.node_facts import _general_links, _is_ipv4, _typed_links, parse_links
from flannel_bot.ports.probes import ProbeOutput
from tests.unit.test_rules import healthy

ROOT = Path(__file__).resolve().parents[2]
LINK = {
    "ifindex": 3,
    "ifname": "flannel.1",
    "flags": ["BROADCAST", "UP"],
    "mtu": 1450,
    "address": "0A:FB:00:02:00:01",
    "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 1, "link": "eth0", "port": 8472}},
    "addr_info": [
        {"family": "inet", "local": "10.244.2.0", "prefixlen": 32, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
    ],
}


def real_outputs() -> list[ProbeOutput]:
    ev = healthy()
    found = [outputs["ip-addr"] for outputs in ev.probes.values() if "ip-addr" in outputs]
    for path in sorted((ROOT / "examples" / "dump" / "probes").glob("*/ip-addr.txt")):
        found.append(ProbeOutput(0, path.read_text()))
    assert found
    return found


ODD = [
    [],
    [{**LINK, "mtu": None, "address": None}],
    [{**LINK, "linkinfo": {}}, {**LINK, "ifname": "cni0", "linkinfo": {"info_data": None}}],
    [{"ifname": "lo"}, {"mtu": "1500"}],  # fields missing, a number as text
    [{**LINK, "addr_info": []}, 5, "x"],  # items that are not objects are skipped
    [{**LINK, "linkinfo": {"info_kind": "bridge", "info_data": ["not", "an", "object"]}}],
    [{**LINK, "addr_info": [{"family": "inet6"}]}],  # no inet address: nothing read of it
]


@pytest.mark.parametrize(
    "out",
    [
        *real_outputs(),
        *(ProbeOutput(0, json.dumps(links)) for links in ODD),
        ProbeOutput(1, "", "Cannot find device"),
        ProbeOutput(0, "not json"),
    ],
)
def test_the_typed_links_are_the_general_ones(out: ProbeOutput) -> None:
    assert parse_links(out) == _general_links(out)


def test_the_usual_output_takes_the_typed_path_and_an_odd_one_the_general() -> None:
    assert _typed_links(ProbeOutput(0, json.dumps([LINK]))) is not None
    # an inet address without its prefix: the general path's own reading of it (a KeyError)
    # is left to it, not guessed
    bare = [{**LINK, "addr_info": [{"family": "inet", "local": "10.0.0.1"}]}]
    assert _typed_links(ProbeOutput(0, json.dumps(bare))) is None
    assert _typed_links(ProbeOutput(0, '[{"ifname": "a", "addr_info": null}]')) is None


@pytest.mark.parametrize(
    "text",
    [
        *("1.2.3.4", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3"),
        *("1.2.3.4.5", "1.2.3.04", "1..2.3", " 1.2.3.4", "1.2.3.4\n", "a.b.c.d"),
        *("1.2.3.\u00b2", "\u0661.2.3.4"),  # digits that are not ASCII
    ],
)
def test_a_reservation_address_is_what_ipaddress_accepts(text: str) -> None:
    try:
        ipaddress.IPv4Address(text)
        accepted = True
    except ValueError:
        accepted = False
    assert _is_ipv4(text) is accepted
