#!/usr/bin/env bash
# Antmeter's entry point. Installs into .venv (pinned by requirements.lock) on first use, then:
#   bash run.sh main [--days N] [--symbols A,B]   run the whole asset graph on the embedded default
#   bash run.sh test [pytest args]                 run the test suite
#   bash run.sh ui                                 open the Dagster UI on the same local instance
#   bash run.sh mlflow                             open the MLflow UI on the local tracking store
#   bash run.sh deploy [--port N ...]              the Postgres-backed topology (code server, daemon,
#                                                  webserver) as processes on this machine
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

ensure_venv() {
  local py
  py=$(command -v python3.11 || command -v python3)
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ requirements.lock -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade "pip>=24"
    # torch==2.13.0 is pinned (a CPU wheel); the lock pins everything else, so installs are identical.
    .venv/bin/python -m pip install --quiet -c requirements.lock -e '.[dev,bench,celery]'
    touch .venv/.installed
  fi
}

local_instance() {
  export DAGSTER_HOME="$ROOT/.dagster_home"
  mkdir -p "$DAGSTER_HOME"
  cp deploy/local/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
}

cmd=${1:-}
shift || true
case "$cmd" in
  main)
    ensure_venv; local_instance
    exec .venv/bin/python -m antmeter_assets.main_job "$@" ;;
  test)
    ensure_venv
    exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" ;;
  ui)
    ensure_venv; local_instance
    exec .venv/bin/dagster dev -m antmeter_assets.definitions -p "${PORT:-3000}" ;;
  mlflow)
    ensure_venv
    exec .venv/bin/mlflow ui --backend-store-uri "sqlite:///$ROOT/data/mlflow/mlflow.db" --port "${PORT:-5000}" ;;
  deploy)
    ensure_venv
    exec .venv/bin/python -m antmeter_deploy "$@" ;;
  *)
    echo "usage: bash run.sh {main|test|ui|mlflow|deploy} [args]" >&2; exit 2 ;;
esac
