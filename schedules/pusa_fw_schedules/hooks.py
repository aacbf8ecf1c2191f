"""Placeholder hooks; filled in by the schedules package."""
