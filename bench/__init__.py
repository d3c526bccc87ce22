"""Benchmarks of sdinfra on local disposable fleets (not tests: they time things)."""
