"""The lab: a small Flannel cluster of network namespaces, sshd and an API server on localhost."""
