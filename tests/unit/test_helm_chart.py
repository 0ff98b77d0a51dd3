"""deploy/helm/flannel-bot renders, with its defaults, what deploy/base renders.

Two ways to install one bot must not drift: a rule added to deploy/base/rbac.yaml and forgotten in
the chart would leave Helm installs refused where the lab (which runs on the kustomize render)
says every call is allowed. The chart is rendered by Helm v4's own engine (helm-python-sdk wraps
its Go SDK; no helm binary, no cluster) and compared object by object with `kubectl kustomize`'s
render: names, namespaces, RBAC rules, the Deployment, the PVC and the parsed flannel-bot.toml.
Then the values: another release namespace, the Slack Secret, clusters and policy groups.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

import flannel_bot
from flannel_bot.settings import load_settings
from tests.lab import rbac
from tests.rendered import CHART, rendered_base_or_skip, rendered_chart

Key = tuple[str, str, str | None]  # kind, name, namespace
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
CONFIG_HASH = re.compile(r"^(flannel-bot-config)-[a-z0-9]{10}$")  # kustomize's generator suffix


@pytest.fixture(scope="module")
def base() -> dict[Key, dict[str, Any]]:
    docs = rendered_base_or_skip()
    return by_key(docs)


def by_key(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    out = {}
    for d in docs:
        name = CONFIG_HASH.sub(r"\1", d["metadata"]["name"])
        out[(d["kind"], name, d["metadata"].get("namespace"))] = d
    return out


def chart(values: dict[str, Any] | None = None, namespace: str = "flannel-bot") -> dict[Key, Any]:
    return by_key(rendered_chart(values, namespace=namespace))


def settings_toml(objects: dict[Key, Any], namespace: str = "flannel-bot") -> dict[str, Any]:
    config = objects[("ConfigMap", "flannel-bot-config", namespace)]
    loaded: dict[str, Any] = tomllib.loads(config["data"]["flannel-bot.toml"])
    return loaded


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod template without what names the ConfigMap's generated name or Helm's extras."""
    spec: dict[str, Any] = copy.deepcopy(deployment["spec"]["template"]["spec"])
    for volume in spec["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = CONFIG_HASH.sub(r"\1", volume["configMap"]["name"])
    for container in spec["containers"]:
        container.pop("imagePullPolicy", None)
    return spec


def env(objects: dict[Key, Any], namespace: str = "flannel-bot") -> dict[str, Any]:
    deployment = objects[("Deployment", "flannel-bot", namespace)]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- the defaults render deploy/base -------------------------------------------------------------


def test_the_chart_is_the_bots_version_and_its_image_tag() -> None:
    with helm.Chart.load(CHART) as loaded:
        metadata = loaded.metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == flannel_bot.__version__, "bump appVersion with the bot"
    deployment = chart()[("Deployment", "flannel-bot", "flannel-bot")]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/flannel-bot/flannel-bot:{flannel_bot.__version__}"


def test_defaults_render_the_objects_of_the_base_where_the_base_puts_them(
    base: dict[Key, dict[str, Any]],
) -> None:
    # `helm install --create-namespace` makes the Namespace, which a chart must then not render
    assert set(chart()) == set(base) - {("Namespace", "flannel-bot", None)}
    assert set(chart({"createNamespace": True})) == set(base)


def test_defaults_grant_the_rules_of_the_base_role_by_role(
    base: dict[Key, dict[str, Any]],
) -> None:
    rendered = chart()
    for key, obj in base.items():
        if key[0] in ("ClusterRole", "Role"):
            assert rendered[key]["rules"] == obj["rules"], key
        elif key[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert rendered[key]["roleRef"] == obj["roleRef"], key
            assert rendered[key]["subjects"] == obj["subjects"], key


def test_defaults_render_the_deployment_volume_and_settings_of_the_base(
    base: dict[Key, dict[str, Any]],
) -> None:
    rendered = chart()
    key = ("Deployment", "flannel-bot", "flannel-bot")
    assert rendered[key]["spec"]["replicas"] == base[key]["spec"]["replicas"] == 1
    assert rendered[key]["spec"]["strategy"] == base[key]["spec"]["strategy"]
    assert rendered[key]["spec"]["selector"] == base[key]["spec"]["selector"]
    assert pod_spec(rendered[key]) == pod_spec(base[key])
    pvc = ("PersistentVolumeClaim", "flannel-bot-state", "flannel-bot")
    assert rendered[pvc]["spec"] == base[pvc]["spec"]
    assert settings_toml(rendered) == settings_toml(base)


def test_the_chart_grants_exactly_what_the_lab_checks_on_the_kustomize_render(
    base: dict[Key, dict[str, Any]],
) -> None:
    """tests/lab's RBAC tests run the bot with granted_rules(kustomize render): the same rules
    from the chart's render make those tests cover Helm installs too."""
    from_helm = rbac.granted_rules(list(chart().values()))
    from_kustomize = rbac.granted_rules(list(base.values()))
    assert from_helm, "the chart binds nothing to the bot's ServiceAccount"
    assert Counter(from_helm) == Counter(from_kustomize)


def test_in_another_namespace_the_rules_are_the_same_and_kube_proxy_stays_in_kube_system(
    base: dict[Key, dict[str, Any]],
) -> None:
    rendered = chart(namespace="ops")
    where = {(kind, name): ns for kind, name, ns in rendered}
    assert where[("Role", "flannel-bot-kube-proxy")] == "kube-system"
    assert where[("RoleBinding", "flannel-bot-kube-proxy")] == "kube-system"
    others = {k: ns for k, ns in where.items() if ns not in (None, "ops")}
    assert set(others) == {
        ("Role", "flannel-bot-kube-proxy"),
        ("RoleBinding", "flannel-bot-kube-proxy"),
    }
    subject = {"kind": "ServiceAccount", "name": "flannel-bot", "namespace": "ops"}
    bindings = [o for (kind, _, _), o in rendered.items() if kind.endswith("Binding")]
    assert len(bindings) == 5
    assert all(b["subjects"] == [subject] for b in bindings)
    assert settings_toml(rendered, "ops")["leader"]["lease"] == "ops/flannel-bot"
    assert rendered[("Role", "flannel-bot-leader", "ops")]

    moved = [
        replace(rule, namespace="ops") if rule.namespace == "flannel-bot" else rule
        for rule in rbac.granted_rules(list(base.values()))
    ]
    assert Counter(rbac.granted_rules(list(rendered.values()), "ops")) == Counter(moved)
    assert rbac.granted_rules(list(rendered.values())) == []  # nothing for flannel-bot's SA


def test_a_lease_elsewhere_takes_the_leader_role_with_it() -> None:
    rendered = chart({"leader": {"lease": "leases/bot"}}, namespace="ops")
    assert settings_toml(rendered, "ops")["leader"]["lease"] == "leases/bot"
    assert ("Role", "flannel-bot-leader", "leases") in rendered
    assert ("RoleBinding", "flannel-bot-leader", "leases") in rendered


# -- values ----------------------------------------------------------------------------------------


def test_an_existing_slack_secret_and_its_keys_feed_the_tokens() -> None:
    values = {"slack": {"secretName": "team-slack", "botTokenKey": "xoxb", "appTokenKey": "xapp"}}
    rendered = chart(values)
    tokens = env(rendered)
    assert tokens["SLACK_BOT_TOKEN"] == {"secretKeyRef": {"name": "team-slack", "key": "xoxb"}}
    assert tokens["SLACK_APP_TOKEN"] == {"secretKeyRef": {"name": "team-slack", "key": "xapp"}}
    assert not [k for k in rendered if k[0] == "Secret"]  # it exists: the chart makes none


def test_tokens_given_as_values_make_the_secret_the_env_reads() -> None:
    rendered = chart({"slack": {"botToken": "xoxb-1", "appToken": "xapp-1"}})
    secret = rendered[("Secret", "flannel-bot-slack", "flannel-bot")]
    assert secret["stringData"] == {"bot-token": "xoxb-1", "app-token": "xapp-1"}
    assert env(rendered)["SLACK_BOT_TOKEN"]["secretKeyRef"] == {
        "name": "flannel-bot-slack",
        "key": "bot-token",
    }


def test_http_mode_reads_the_signing_secret_instead_of_the_app_token() -> None:
    rendered = chart({"slack": {"mode": "http"}})
    assert "SLACK_APP_TOKEN" not in env(rendered)
    assert env(rendered)["SLACK_SIGNING_SECRET"]["secretKeyRef"]["key"] == "signing-secret"
    assert settings_toml(rendered)["slack"]["mode"] == "http"


def test_clusters_and_policy_groups_make_settings_the_bot_loads(tmp_path: Path) -> None:
    values = {
        "clusters": {
            "prod-eu": {"context": "prod-eu", "ssh": {"user": "ops"}},
            "lab": {"context": 'lab "quoted"\n[policy]'},
        },
        "kubeconfigSecret": "flannel-bot-kubeconfig",
        "policy": {"approvers": ["alice", "bob"], "operators": ["carol"]},
        "slack": {"users": {"U0123ABCD": "alice"}},
        "ssh": {"existingSecret": "node-keys"},
    }
    rendered = chart(values)
    raw = settings_toml(rendered)
    assert raw["clusters"]["prod-eu"] == {"context": "prod-eu", "ssh": {"user": "ops"}}
    assert raw["clusters"]["home"] == {"in_cluster": True}
    assert raw["policy"]["groups"] == {"operators": ["carol"], "approvers": ["alice", "bob"]}

    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        rendered[("ConfigMap", "flannel-bot-config", "flannel-bot")]["data"]["flannel-bot.toml"]
    )
    settings = load_settings(config, env={"POD_NAME": "flannel-bot-0"})
    assert [c.name for c in settings.clusters] == ["home", "lab", "prod-eu"]
    assert settings.default_cluster == "home"
    eu = settings.cluster("prod-eu")
    assert eu.context == "prod-eu"
    assert eu.kubeconfig == Path("/etc/flannel-bot/kube/config")
    assert eu.ssh.user == "ops"
    assert settings.cluster("lab").context == 'lab "quoted"\n[policy]'  # a value, not a table
    assert settings.cluster("home").in_cluster
    assert settings.policy.groups["approvers"] == frozenset({"alice", "bob"})
    assert settings.slack.users == {"U0123ABCD": "alice"}
    assert settings.leader.lease == "flannel-bot/flannel-bot"

    pod = rendered[("Deployment", "flannel-bot", "flannel-bot")]["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"ssh": "node-keys", "kube": "flannel-bot-kubeconfig"}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["kube"] == "/etc/flannel-bot/kube"


def test_default_settings_load_as_the_bots_settings(tmp_path: Path) -> None:
    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        chart()[("ConfigMap", "flannel-bot-config", "flannel-bot")]["data"]["flannel-bot.toml"]
    )
    settings = load_settings(config, env={})
    assert [c.in_cluster for c in settings.clusters] == [True]
    assert settings.db_path == Path("/var/lib/flannel-bot/flannel-bot.db")


def test_image_resources_and_persistence_come_from_values() -> None:
    values = {
        "image": {"repository": "registry.example/flannel-bot", "tag": "0.2.0-rc1"},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
        "persistence": {"size": "10Gi", "storageClass": "local-path"},
    }
    rendered = chart(values)
    pod = rendered[("Deployment", "flannel-bot", "flannel-bot")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/flannel-bot:0.2.0-rc1"
    assert pod["containers"][0]["resources"] == values["resources"]
    pvc = rendered[("PersistentVolumeClaim", "flannel-bot-state", "flannel-bot")]["spec"]
    assert pvc["storageClassName"] == "local-path"
    assert pvc["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["accessModes"] == ["ReadWriteOnce"]


def test_replicas_are_not_a_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "replicas" not in values and "replicaCount" not in values
    deployment = chart({"replicas": 3, "replicaCount": 3})[
        ("Deployment", "flannel-bot", "flannel-bot")
    ]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    "values",
    [None, {"clusters": {"prod-eu": {"context": "prod-eu"}}, "slack": {"botToken": "xoxb-1"}}],
)
def test_helm_lint_finds_no_error(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="flannel-bot")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def pod_writes(rules: list[Any]) -> list[tuple[str, str | None]]:
    """(verb, namespace) of every grant to create pods: None is every namespace."""
    return [
        (verb, r.namespace)
        for r in rules
        for verb in r.verbs
        if verb in ("create", "*") and {"pods", "*"} & set(r.resources)
    ]


@pytest.mark.parametrize("namespace", ["flannel-bot", "ops"])
def test_node_exec_pods_may_be_created_only_in_the_bots_namespace(
    base: dict[Key, dict[str, Any]], namespace: str
) -> None:
    """[nodes] access = "pod": creating pods is the widest grant the bot has (a privileged pod
    is root on a node), so it is held to the bot's own namespace, in both renders."""
    renders = [list(chart(namespace=namespace).values())]
    if namespace == "flannel-bot":
        renders.append(list(base.values()))
    for docs in renders:
        rules = rbac.granted_rules(docs, namespace)
        assert pod_writes(rules) == [("create", namespace)]
        exec_rules = [r for r in rules if r.namespace == namespace and "pods" in r.resources]
        assert {v for r in exec_rules for v in r.verbs} == {"create", "get", "list", "delete"}
        assert any(r.namespace == namespace and r.resources == ("pods/log",) for r in rules)
        roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
        assert not any(
            "create" in rule["verbs"] and "pods" in rule["resources"]
            for role in roles
            if role["kind"] == "ClusterRole"
            for rule in role["rules"]
        )


def test_the_bots_namespace_allows_privileged_pods_and_the_bot_uses_them(
    base: dict[Key, dict[str, Any]],
) -> None:
    privileged = {"pod-security.kubernetes.io/enforce": "privileged"}
    for rendered in (base, chart({"createNamespace": True})):
        labels = rendered[("Namespace", "flannel-bot", None)]["metadata"]["labels"]
        assert privileged.items() <= labels.items()
        nodes = settings_toml(rendered)["nodes"]
        assert (nodes["access"], nodes["namespace"]) == ("pod", "flannel-bot")
    assert settings_toml(chart(namespace="ops"), "ops")["nodes"]["namespace"] == "ops"


def test_nodes_over_ssh_render_no_pod_role_and_no_privileged_namespace() -> None:
    rendered = chart({"createNamespace": True, "nodes": {"access": "ssh"}})
    assert ("Role", "flannel-bot-node-exec", "flannel-bot") not in rendered
    assert pod_writes(rbac.granted_rules(list(rendered.values()))) == []
    labels = rendered[("Namespace", "flannel-bot", None)]["metadata"]["labels"]
    assert "pod-security.kubernetes.io/enforce" not in labels
    assert settings_toml(rendered)["nodes"]["access"] == "ssh"


def test_default_settings_reach_nodes_through_pods(tmp_path: Path) -> None:
    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        chart()[("ConfigMap", "flannel-bot-config", "flannel-bot")]["data"]["flannel-bot.toml"]
    )
    nodes = load_settings(config, env={}).cluster().nodes
    assert (nodes.access, nodes.namespace) == ("pod", "flannel-bot")
    # the node-exec pods run whatever image the bot's pod runs (the chart's image.tag included)
    assert nodes.image == "self"


def test_the_host_network_is_a_value_whose_dns_policy_follows_it() -> None:
    key = ("Deployment", "flannel-bot", "flannel-bot")
    pod = chart()[key]["spec"]["template"]["spec"]
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "Default")
    pod = chart({"hostNetwork": False})[key]["spec"]["template"]["spec"]
    assert (pod.get("hostNetwork", False), pod["dnsPolicy"]) == (False, "ClusterFirst")
