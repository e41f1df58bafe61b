#!/usr/bin/env bash
# Antmeter's entry point. Installs into .venv (pinned by requirements.lock) on first use, then:
#   bash run.sh main [--days N] [--symbols A,B]   run the whole asset graph on the embedded default
#   bash run.sh test [pytest args]                 run the test suite
#   bash run.sh ui                                 open the Dagster UI on the same local instance
#   bash run.sh mlflow                             open the MLflow UI on the local tracking store
#   bash run.sh deploy [--port N ...]              the Postgres-backed topology (code server, daemon,
#                                                  webserver) as processes on this machine
#   bash run.sh serve                              the inference API and dashboard (uvicorn, port PORT,
#                                                  default 8000) on the same store and MLflow registry
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
  # MLflow's per-download progress bars would bury the main job's own progress lines
  export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="${MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR:-false}"
  mkdir -p "$DAGSTER_HOME"
  cp deploy/local/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
  # The embedded default plants chart patterns (the example annotations' ground truth); the main job
  # and the UI must agree on it, or the UI sees another job definition than the runs were made with.
  export ANTMETER_SIM_PATTERNS="${ANTMETER_SIM_PATTERNS:-on}"
}

# `dagster dev` on the local instance, started from DAGSTER_HOME (so the deployment's dagster.yaml in
# the repository root is not mistaken for the instance's) and stopped promptly on Ctrl-C / SIGTERM:
# the signal goes to its whole process group (webserver, daemon, code server); what is still
# running 10 s later is killed.
serve_ui() {
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONWARNINGS='ignore:Function `dev_command` is superseded'
  (cd "$DAGSTER_HOME" && exec setsid "$ROOT/.venv/bin/dagster" dev -w "$ROOT/deploy/local/workspace.yaml" \
    -p "${PORT:-3000}") &
  local dev=$!
  stop_ui() {
    trap - TERM INT
    kill -TERM -- "-$dev" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$dev" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$dev" 2>/dev/null || true
    exit 0
  }
  trap stop_ui TERM INT
  wait "$dev"
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
    serve_ui ;;
  mlflow)
    ensure_venv
    exec .venv/bin/mlflow ui --backend-store-uri "sqlite:///$ROOT/data/mlflow/mlflow.db" --port "${PORT:-5000}" ;;
  deploy)
    ensure_venv
    exec .venv/bin/python -m antmeter_deploy "$@" ;;
  serve)
    ensure_venv
    export PORT="${PORT:-8000}"
    exec .venv/bin/python -m antmeter_api "$@" ;;
  *)
    echo "usage: bash run.sh {main|test|ui|mlflow|deploy|serve} [args]" >&2; exit 2 ;;
esac
