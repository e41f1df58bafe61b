"""Live evaluation of Antmeter predictions: verification, drift, trading P&L, retrain policy and replay.

Everything here is pure (frames in, frames/dicts out): no Dagster, no database access. The Dagster
sensor and the replay driver call the same functions so that they decide identically.
"""
