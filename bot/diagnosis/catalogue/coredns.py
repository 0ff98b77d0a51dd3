"""Messages of the cluster DNS (CoreDNS's kubernetes plugin, through client-go): ordinary pods on
the pod network, whose log shows what any pod meets on its way to the API Service."""

from __future__ import annotations

from flannel_bot.diagnosis.catalogue.message import DNS_LOG, Message

MESSAGES: tuple[Message, ...] = (
    Message(
        finding="host-firewall-reject",
        pattern=r"dial tcp [\d.]+:443: connect: no route to host",
        producer="coredns",
        source="kubernetes/client-go:tools/cache/reflector.go (Failed to list ... Get ...: dial tcp ...) in coredns/coredns:plugin/kubernetes; `no route to host` is EHOSTUNREACH, what a REJECT --reject-with icmp-host-prohibited (firewalld's default) returns",
        versions="CoreDNS 1.2-current",
        example="E0305 16:36:17.678604       1 reflector.go:205] github.com/coredns/coredns/plugin/kubernetes/controller.go:322: Failed to list *v1.Namespace: Get https://10.43.0.1:443/api/v1/namespaces?limit=500&resourceVersion=0: dial tcp 10.43.0.1:443: connect: no route to host",
        where=(DNS_LOG,),
        meaning="A pod's connection to the API Service is rejected with host-prohibited: a host firewall, not routing.",
        url="https://github.com/k3s-io/k3s/issues/24",
    ),
    Message(
        finding="apiserver-unreachable",
        pattern=r"dial tcp [\d.]+:443: (i/o timeout|connect: connection refused)",
        producer="coredns",
        source="kubernetes/client-go:tools/cache/reflector.go (Failed to list / watch errors) in coredns/coredns:plugin/kubernetes",
        versions="CoreDNS 1.2-current",
        example='[INFO] plugin/kubernetes: pkg/mod/k8s.io/client-go@v0.27.4/tools/cache/reflector.go:231: failed to list *v1.Service: Get "https://10.96.0.1:443/api/v1/services?limit=500&resourceVersion=0": dial tcp 10.96.0.1:443: i/o timeout',
        where=(DNS_LOG,),
        meaning="Pods cannot reach the API Service (kube-proxy's rules, routing between pods and the API).",
    ),
)
