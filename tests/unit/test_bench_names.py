"""A script run from bench/ puts bench/ first on sys.path, so a bench module named like a standard
library module (bench/secrets.py did) replaces it for everything that script imports."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_bench_script_shadows_the_standard_library() -> None:
    shadowing = sorted(
        p.name for p in (REPO / "bench").glob("*.py") if p.stem in sys.stdlib_module_names
    )
    assert shadowing == []
