"""The same two models behind other serving stacks, for benchmarks/compare.py."""
