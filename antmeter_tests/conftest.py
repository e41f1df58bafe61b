"""Shared fixtures: a fresh PostgreSQL database or SQLite file per test, loopback HTTP servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "ANTMETER_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _pg_url(database: str) -> str:
    return sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for this test, dropped afterwards."""
    name = f"antmeter_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path / 'market.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request) -> str:
    """Run the test once against SQLite and once against PostgreSQL, each on a fresh database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
