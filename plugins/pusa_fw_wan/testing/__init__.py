"""Test and demo helpers: a tiny random-weight Wan set laid out like the official release."""
