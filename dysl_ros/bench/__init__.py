"""Benchmarks behind `dysl_bench`: `latency` (segment engines, dense vs DySL) and `closed-loop`
(Meta-World success per policy variant). Each module exposes ``add_arguments`` and ``run``."""
