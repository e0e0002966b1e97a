"""Fixture plugin (placeholder until written)."""
