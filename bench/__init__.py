"""Benchmarks of the performance budgets; run each module from the repository root (README.md)."""
