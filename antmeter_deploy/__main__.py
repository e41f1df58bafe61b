"""``python -m antmeter_deploy``: the single-box deployment (``bash run.sh deploy``).

Starts the code server, the daemon and the webserver on a PostgreSQL server (databases created when
missing), with the project's ``dagster.yaml`` and ``workspace.yaml``, and keeps them running until
SIGINT/SIGTERM. ``ANTMETER_*`` settings of the calling shell reach the code location.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from antmeter_deploy.topology import REPO, build_topology, ensure_database

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bash run.sh deploy", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO / ".deploy",
        help="DAGSTER_HOME, data and logs live under this folder (default: .deploy)",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("ANTMETER_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="SQLAlchemy URL of the PostgreSQL server (env ANTMETER_PG_ADMIN_URL)",
    )
    parser.add_argument("--dagster-db", default="antmeter_dagster", help="database for Dagster's storage")
    parser.add_argument("--store-db", default="antmeter_market", help="database for the market store")
    parser.add_argument("--host", default="127.0.0.1", help="address the webserver listens on")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "3000")), help="webserver port (env PORT)"
    )
    parser.add_argument("--grpc-port", type=int, default=4266, help="code server port")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dagster_url = ensure_database(args.admin_url, args.dagster_db)
    market_url = ensure_database(args.admin_url, args.store_db)
    settings = {k: v for k, v in os.environ.items() if k.startswith("ANTMETER_")}
    topology = build_topology(
        args.root.resolve(),
        dagster_db_url=dagster_url,
        market_db_url=market_url,
        grpc_port=args.grpc_port,
        webserver_port=args.port,
        code_env=settings,
        host=args.host,
    )
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    try:
        topology.start()
        print(
            f"antmeter: webserver http://{args.host}:{args.port}  (logs in {topology.root / 'logs'})",
            flush=True,
        )
        while not stop["now"]:
            dead = {n: p.returncode for n, p in topology.processes.items() if p.poll() is not None}
            if dead:
                raise SystemExit(f"antmeter: {dead} exited\n{topology.log_tails()}")
            time.sleep(1.0)
    finally:
        topology.stop()


if __name__ == "__main__":
    main()
