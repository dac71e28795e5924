"""Benchmarks of circleback side by side with APScheduler 4.

``python -m bench`` runs the workloads (W1 burst, W2 spread, W3 idle pollers,
W4 HTTP pollers, W5 scale) on both systems in alternation, each run in a fresh
subprocess, and prints min / median / max of every figure with the ratio of
the medians. See ``bench/README.md``.
"""
