"""Antmeter's Dagster layer (the code location is ``antmeter_assets.definitions``)."""

import warnings

import dagster as dg

# The location knowingly uses Beta/Preview APIs (multi-partition mappings, blocking checks,
# automation-condition sensors): their warnings, raised for our own definitions only, are noise
# in `dagster dev`, the daemon and the main job's console.
for _category in (dg.BetaWarning, dg.PreviewWarning):
    warnings.filterwarnings("ignore", category=_category, module=r"antmeter_assets(\.|$)")
