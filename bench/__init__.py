"""Benchmarks for SPEC §6; run each module from the repository root (see bench/README.md)."""
