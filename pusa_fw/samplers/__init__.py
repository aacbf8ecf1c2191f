"""Sampler rules over a plan: Euler, per-frame UniPC and LCM (keyed re-noising)."""
