"""Operator actions: launch the pipeline's Dagster jobs through the webserver's GraphQL API over HTTP.

The API process never runs a job itself (and never imports Dagster): it asks the webserver to launch
a run (or an asset backfill) and returns its id and its URL in the Dagster UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

LAUNCHED_BY = {"key": "antmeter/launched_by", "value": "api"}

_REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

_LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

_LAUNCH_BACKFILL = """
mutation LaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on Error { message }
  }
}
"""


class DagsterUnavailable(RuntimeError):
    """The webserver cannot be reached (the API answers 503)."""


class LaunchFailed(RuntimeError):
    """The webserver refused the launch (the API answers 502 with its reason)."""


@dataclass(frozen=True)
class Launched:
    kind: str  # "run" or "backfill"
    id: str
    url: str
    job: str


class DagsterLauncher:
    """Launches jobs of the code location that defines them, found through ``repositoriesOrError``."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = httpx.post(
                f"{self.base_url}/graphql",
                json={"query": query, "variables": variables or {}},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.base_url} is not reachable ({type(exc).__name__}); "
                "start it (`bash run.sh ui` or `bash run.sh deploy`) or set ANTMETER_API_DAGSTER_URL"
            ) from None
        if response.status_code != 200:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.base_url} answered HTTP {response.status_code}"
            )
        body = response.json()
        if body.get("errors"):
            raise LaunchFailed("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    def ping(self) -> bool:
        try:
            return (
                httpx.get(f"{self.base_url}/server_info", timeout=min(self.timeout_s, 3.0)).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def _selector(self, job: str) -> dict[str, str]:
        repositories = self._graphql(_REPOSITORIES)["repositoriesOrError"]
        if repositories["__typename"] != "RepositoryConnection":
            raise LaunchFailed(
                f"the webserver could not list its code locations: {repositories.get('message')}"
            )
        for repo in repositories["nodes"]:
            if job in {j["name"] for j in repo["jobs"]}:
                return {
                    "repositoryName": repo["name"],
                    "repositoryLocationName": repo["location"]["name"],
                    "jobName": job,
                }
        raise LaunchFailed(f"no code location of the webserver defines job {job!r}")

    def launch_job(
        self,
        job: str,
        assets: list[str] | None = None,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> Launched:
        """Launch one run of ``job`` (optionally only ``assets`` of it) and return its id and URL."""
        selector: dict[str, Any] = self._selector(job)
        if assets:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        params = {
            "selector": selector,
            "runConfigData": run_config or {},
            "executionMetadata": {
                "tags": [LAUNCHED_BY, *({"key": k, "value": v} for k, v in (tags or {}).items())]
            },
        }
        result = self._graphql(_LAUNCH_RUN, {"executionParams": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            reasons = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
            raise LaunchFailed(f"{result['__typename']}: {reasons}")
        run_id = result["run"]["runId"]
        return Launched("run", run_id, f"{self.base_url}/runs/{run_id}", job)

    def backfill_assets(self, assets: list[str], partitions: list[str], title: str) -> Launched:
        """An asset backfill of ``assets`` over ``partitions``; returns the backfill id and URL."""
        params = {
            "assetSelection": [{"path": [a]} for a in assets],
            "partitionNames": partitions,
            "tags": [LAUNCHED_BY],
            "title": title,
        }
        result = self._graphql(_LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise LaunchFailed(f"{result['__typename']}: {result.get('message')}")
        backfill_id = result["backfillId"]
        return Launched("backfill", backfill_id, f"{self.base_url}/runs/b/{backfill_id}", "backfill")
