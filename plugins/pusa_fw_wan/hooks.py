"""Placeholder hooks; filled in by the Wan plugin."""
