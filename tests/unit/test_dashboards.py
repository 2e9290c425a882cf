"""The built dashboards ship no test hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DIST = DASHBOARDS / "dist"
# What the pages once hung on `window` for the browser tests; the tests now watch from outside.
TEST_HOOK = "__carehub"


def test_the_built_bundle_holds_no_test_hooks() -> None:
    """No file of dashboards/dist names a `window.__carehub…` hook."""
    if not (DIST / "index.html").is_file():
        pytest.fail(f"{DIST} is not built: run `make setup` (npm ci + npm run build)")
    hooked = [
        str(path.relative_to(DASHBOARDS))
        for path in DIST.rglob("*")
        if path.is_file() and TEST_HOOK.encode() in path.read_bytes()
    ]
    assert not hooked, (
        f"the production bundle names {TEST_HOOK}: {hooked}; "
        "observe the page from the tests instead, then `npm run build` in dashboards/"
    )
