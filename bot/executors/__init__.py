"""The only code that touches the outside world: the Kubernetes API, nodes, recorded clusters."""
