"""Speed benchmarks; ``python -m benchmarks.perf`` runs them all and prints one table (``summary.py``)."""
