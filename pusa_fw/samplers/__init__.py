"""Sampler rules over a plan: Euler and per-frame UniPC."""
