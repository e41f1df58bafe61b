"""Fixtures of the integration tests: one running topology per test module.

A module chooses its code-server environment and seeded symbols by overriding the module-scoped
``topology_options`` fixture. When a test that used the topology fails, the last lines of every
service's log are attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from antmeter_deploy.topology import Topology, running_topology
from antmeter_tests.conftest import PG_ADMIN_URL


@pytest.fixture(scope="module")
def topology_options() -> dict[str, Any]:
    """Keyword arguments of ``running_topology`` (override in a test module)."""
    return {}


@pytest.fixture(scope="module")
def topology(tmp_path_factory, topology_options) -> Iterator[Topology]:
    """Fresh databases, DAGSTER_HOME, code server, daemon and webserver for this module."""
    with running_topology(
        tmp_path_factory.mktemp("topology"), admin_url=PG_ADMIN_URL, **topology_options
    ) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    topology = getattr(item, "funcargs", {}).get("topology")
    if report.failed and isinstance(topology, Topology):
        report.sections.append(("topology logs", topology.log_tails()))
