"""Typed configuration (settings) and the local environment (stack)."""
