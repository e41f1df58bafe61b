"""Deployment helpers on the Dagster side: the Postgres-backed topology (code server, daemon,
webserver) started as processes on one machine, for ``bash run.sh deploy``, the integration tests and
the live-latency benchmark."""
