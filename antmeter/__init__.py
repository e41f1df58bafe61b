"""Antmeter domain code (no Dagster import)."""
