"""The service wing: one `/flannel` request in, one structured reply out, for every adapter."""
