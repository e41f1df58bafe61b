"""Bad input benchmark: named corruption operators on candle files, exchange faults, hostile symbols.

Applies every operator of :mod:`antmeter_testkit.corruption` (at least one per defect 1-8 of issue 12
plus the classic ones) with a fixed seed to ``--files`` files (default 1,200), runs ``--exchange``
fault scenarios (default 69) against the loopback Binance server, and feeds every hostile symbol to
the file source and both stores. Every read candle frame, and every corrupted frame as such, is
offered to a SQLite and a PostgreSQL store (a fresh database, admin URL ``ANTMETER_BENCH_PG_ADMIN_URL``).

A case passes only with an error naming the file (URL) and the row/field, or with exactly the
generator's clean rows. The reference in the same run is a clean control: the same number of
uncorrupted files, which must all be read exactly. Prints one JSON object on its last line: counts per
operator and in total of ``tried``, ``clear_errors``, ``silently_accepted``, ``errors_without_context``,
``hangs`` and ``contract_violations_stored`` (goal 0 for the last four).

    PYTHONPATH=. python bench/bench_bad_input.py [--files 1200] [--exchange 69] [--seed 12]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import sqlalchemy as sa

import antmeter_testkit.corruption as corruption
from antmeter.market.candles import CandleValidationError, validate_candles
from antmeter.market.store import MarketStore
from antmeter.market.symbols import InvalidSymbolError
from antmeter_testkit.servers.binance_server import FakeBinance

PG_ADMIN_URL = os.environ.get(
    "ANTMETER_BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
HANG_AFTER_S = 15.0
KEYS = (
    "tried",
    "clear_errors",
    "valid_rows",
    "silently_accepted",
    "errors_without_context",
    "hangs",
    "contract_violations_stored",
    "unexpected_errors",
    "secrets_leaked",
)
OUTCOME_KEY = {
    "clear_error": "clear_errors",
    "valid_rows": "valid_rows",
    "silently_accepted": "silently_accepted",
    "error_without_context": "errors_without_context",
    "hang": "hangs",
    "unexpected_error": "unexpected_errors",  # a clear error where the exact rows were due (an outage raised)
    "secret_leaked": "secrets_leaked",
}
GOALS = ("silently_accepted", "errors_without_context", "hangs", "contract_violations_stored")


class Tally:
    """Counts per operator; a case passes with ``clear_errors`` or ``valid_rows`` (exactly the clean rows)."""

    def __init__(self) -> None:
        self.by_operator: dict[str, Counter] = defaultdict(Counter)

    def add(self, operator: str, outcome: str) -> None:
        self.by_operator[operator]["tried"] += 1
        self.by_operator[operator][OUTCOME_KEY[outcome]] += 1

    def stored_violation(self, operator: str) -> None:
        self.by_operator[operator]["contract_violations_stored"] += 1

    def report(self) -> dict:
        per_operator = {name: {k: c[k] for k in KEYS} for name, c in sorted(self.by_operator.items())}
        totals = {k: sum(c[k] for c in per_operator.values()) for k in KEYS}
        return {"per_operator": per_operator, "totals": totals}


def make_stores(directory: Path) -> tuple[list[MarketStore], str]:
    name = f"antmeter_bench_bad_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    pg = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    stores = [MarketStore(f"sqlite:///{directory / 'market.sqlite'}"), MarketStore(pg)]
    for store in stores:
        store.migrate()
    return stores, name


def drop_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def offer_to_stores(
    stores, tally: Tally, operator: str, symbol: str, interval: str, frame, corrupted: bool
) -> None:
    """Upsert ``frame``; a corrupted frame that a store accepts is a stored contract violation."""
    for store in stores:
        try:
            store.upsert_candles(symbol, interval, frame, source=f"bench {operator}")
        except (CandleValidationError, InvalidSymbolError):
            continue
        if corrupted:
            tally.stored_violation(operator)


def bench_files(directory: Path, stores, tally: Tally, files: int, seed: int) -> dict:
    cases = [(op, fmt) for op in corruption.OPERATORS for fmt in op.formats]
    rng = random.Random(seed)
    control = Counter()
    started = time.monotonic()
    for index in range(files):
        operator, fmt = cases[index % len(cases)]
        case_rng = random.Random(rng.randrange(2**32))
        path, clean, corrupted = corruption.corrupt_file(directory, operator, fmt, case_rng, index)
        t0 = time.monotonic()
        verdict = corruption.judge_file(path, clean, corrupted.interval, operator.harmless)
        outcome = "hang" if time.monotonic() - t0 > HANG_AFTER_S else verdict.outcome
        tally.add(operator.name, outcome)
        symbol = f"F{index}"
        if verdict.read is not None:
            offer_to_stores(stores, tally, operator.name, symbol, corrupted.interval, verdict.read, False)
        if corrupted.frame is not None and not operator.harmless:
            offer_to_stores(stores, tally, operator.name, symbol, corrupted.interval, corrupted.frame, True)
        # reference: the same clean rows, uncorrupted, in the same format
        clean_path = directory / f"clean{index:05d}_{fmt}{corruption.SUFFIX[fmt]}"
        clean_path.write_bytes(corruption.WRITERS[fmt](clean))
        control[corruption.judge_file(clean_path, clean, "1m", True).outcome] += 1
    return {
        "tried": files,
        "valid_rows": control["valid_rows"],
        "seconds_per_file": round((time.monotonic() - started) / (2 * files), 5),
    }


def bench_exchange(stores, tally: Tally, scenarios: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    with FakeBinance({}) as server:
        for index in range(scenarios):
            scenario = corruption.SCENARIOS[index % len(corruption.SCENARIOS)]
            t0 = time.monotonic()
            outcome, _detail = corruption.run_scenario(server, scenario, random.Random(rng.randrange(2**32)))
            if time.monotonic() - t0 > HANG_AFTER_S:
                outcome = "hang"
            tally.add(f"exchange:{scenario.name}", outcome)


def bench_symbols(directory: Path, stores, tally: Tally) -> None:
    for family, symbols in corruption.HOSTILE_SYMBOLS.items():
        for symbol in symbols:
            tally.add(f"symbol:{family}", corruption.judge_symbol(directory, symbol))
            frame = corruption.clean_candles(random.Random(0), 3)
            offer_to_stores(stores, tally, f"symbol:{family}", symbol, "1m", frame, True)


def audit_stores(stores, tally: Tally) -> int:
    """Re-validate every stored series; a series breaking the contract counts as a stored violation."""
    checked = 0
    for store in stores:
        for symbol in store.symbols():
            for interval in ("1m", "1h"):
                stored = store.read_candles(symbol, interval)
                if stored.empty:
                    continue
                checked += 1
                try:
                    validate_candles(stored, f"{store!r} {symbol}", interval)
                except CandleValidationError:
                    tally.stored_violation("audit")
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1200)
    parser.add_argument("--exchange", type=int, default=3 * len(corruption.SCENARIOS))
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    started = time.monotonic()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="bench_bad_input_") as tmp:
        directory = Path(tmp)
        stores, database = make_stores(directory)
        try:
            control = bench_files(directory, stores, tally, args.files, args.seed)
            bench_exchange(stores, tally, args.exchange, args.seed)
            bench_symbols(directory, stores, tally)
            audited = audit_stores(stores, tally)
        finally:
            for store in stores:
                store.engine.dispose()
            drop_database(database)
    report = tally.report()
    report["files"] = args.files
    report["exchange_scenarios"] = args.exchange
    report["operators"] = len(corruption.OPERATORS)
    report["defects_covered"] = sorted({op.defect for op in corruption.OPERATORS} | {"6", "7", "8"})
    report["clean_control"] = control
    report["stored_series_audited"] = audited
    report["seed"] = args.seed
    report["seconds"] = round(time.monotonic() - started, 1)
    report["goals_met"] = (
        all(report["totals"][k] == 0 for k in (*GOALS, "unexpected_errors", "secrets_leaked"))
        and control["valid_rows"] == control["tried"]
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
