"""Benchmarks of mmvae_lite against the authors' MMVAE code (see bench/README.md)."""
