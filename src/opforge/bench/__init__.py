"""Benchmarks of generated plugins against PyTorch."""
