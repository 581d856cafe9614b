"""pytest-benchmark micro-benchmarks of the relay's and control plane's hot functions.

The cases live in :mod:`bench.micro.cases`, shared by the pytest-benchmark files here (for
people: grouped, saved, compared) and by the performance gate (:mod:`bench.gate`), which times
them interleaved with reference functions and compares the ratios with a baseline.
"""
