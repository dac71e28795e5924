"""The network layer: the address policy and the guarded HTTP client that polls obey."""
