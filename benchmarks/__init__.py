"""Benchmarks for commhistory: ``python -m benchmarks [NAME...]``.

Each ``bench_*.py`` module defines ``benchmarks()``, returning a list of
:class:`benchmarks._harness.Benchmark`, and can run alone
(``python -m benchmarks.bench_normalize``). Goals are reported, not asserted:
a run exits 0 even when one is missed, and its last output line is one JSON
object with every figure.
"""
