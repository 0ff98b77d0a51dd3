from __future__ import annotations

import pytest

from flannel_bot.errors import ExecutorError
from flannel_bot.executors.selectors import fields_match, labels_match

LABELS = {"app": "flannel", "tier": "node", "k8s-app": "flannel"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, True),
        ("", True),
        ("app=flannel", True),
        ("app==flannel", True),
        ("app=flannel, tier=node", True),
        ("app=kube-proxy", False),
        ("app!=kube-proxy", True),
        ("app!=flannel", False),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("app=flannel,!tier", False),
    ],
)
def test_label_selectors(selector: str | None, matches: bool) -> None:
    assert labels_match(selector, LABELS) is matches


def test_field_selectors_compare_the_dotted_value() -> None:
    values = {"spec.nodeName": "w2", "metadata.namespace": "kube-flannel"}
    field = values.get
    assert fields_match("spec.nodeName=w2", lambda k: field(k) or "")
    assert not fields_match("spec.nodeName=w1", lambda k: field(k) or "")
    assert fields_match(
        "spec.nodeName!=w1,metadata.namespace=kube-flannel", lambda k: field(k) or ""
    )


@pytest.mark.parametrize("selector", ["app in (flannel)", "app notin (x)", "app in (a,b)"])
def test_set_based_selectors_are_refused_by_name(selector: str) -> None:
    with pytest.raises(ExecutorError, match="only equality selectors"):
        labels_match(selector, LABELS, where="bundle /x: ")


def test_a_field_selector_without_a_value_is_refused() -> None:
    with pytest.raises(ExecutorError, match="has no value"):
        fields_match("spec.nodeName", lambda k: "")
