from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest

from flannel_bot.errors import ParameterError
from flannel_bot.runs.params import check_params_class, parse_params
from flannel_bot.runs.runbook import NodeName


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True)
class P:
    node: NodeName = field(metadata={"help": "the node"})
    nodes: tuple[NodeName, ...] = ()
    mode: Mode = Mode.SAFE
    force: bool = False
    count: int = 1


def test_typed_values() -> None:
    p = parse_params(
        P,
        {"node": "w-2.lab", "nodes": "a,b", "mode": "fast", "force": "yes", "count": "3"},
        "x@1.0.0",
    )
    assert p == P(NodeName("w-2.lab"), (NodeName("a"), NodeName("b")), Mode.FAST, True, 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "x@1.0.0 needs `node=<node>` (the node)"),
        ({"node": "w1", "color": "red"}, "x@1.0.0 has no parameter `color`; it takes: node, nodes"),
        ({"node": "w1;reboot"}, "`node=w1;reboot` is not a valid node name"),
        ({"node": "a" * 254}, "is not a valid node name"),
        ({"node": "w1", "nodes": "a,,b"}, "needs one or more node names"),
        ({"node": "w1", "nodes": "a,a"}, "names a node twice"),
        ({"node": "w1", "mode": "yolo"}, "`mode=yolo` is not one of: fast, safe"),
        ({"node": "w1", "force": "maybe"}, "must be true or false"),
        ({"node": "w1", "count": "3; rm"}, "must be a whole number"),
    ],
)
def test_refusals_name_the_fix(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ParameterError) as exc:
        parse_params(P, raw, "x@1.0.0")
    assert message in str(exc.value)


def test_free_form_strings_are_not_a_parameter_type() -> None:
    @dataclass(frozen=True)
    class Loose:
        command: str

    with pytest.raises(TypeError, match="unsupported parameter type"):
        check_params_class(Loose)


def test_params_must_be_frozen() -> None:
    @dataclass
    class Mutable:
        node: NodeName

    with pytest.raises(TypeError, match="frozen"):
        check_params_class(Mutable)
