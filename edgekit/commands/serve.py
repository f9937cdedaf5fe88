"""Registered when implemented."""
