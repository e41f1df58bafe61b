"""Antmeter's HTTP API and dashboard (FastAPI); no Dagster import: jobs are launched over GraphQL."""
