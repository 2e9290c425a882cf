"""The built dashboards ship no test hooks, and their API types match the OpenAPI document."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DIST = DASHBOARDS / "dist"
DOCUMENT = DASHBOARDS / "openapi.json"
GENERATED = DASHBOARDS / "src" / "common" / "api.gen.ts"
PACKAGE = DASHBOARDS / "package.json"
GENERATOR = DASHBOARDS / "node_modules" / ".bin" / "openapi-typescript"
DUMP_SCRIPT = ROOT / "scripts" / "openapi.py"
# What the pages once hung on `window` for the browser tests; the tests now watch from outside.
TEST_HOOK = "__carehub"
# Generating the types takes about two seconds; far more means something hangs.
GENERATOR_TIMEOUT_S = 120


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


def test_the_generated_api_types_match_the_openapi_document(tmp_path: Path) -> None:
    """dashboards/openapi.json is what the code serves, and api.gen.ts is generated from it."""
    if not GENERATOR.is_file() or shutil.which("node") is None:
        pytest.fail(f"no {GENERATOR.relative_to(ROOT)} (or no node): run `make setup`")
    openapi_text = runpy.run_path(str(DUMP_SCRIPT))["openapi_text"]
    document = tmp_path / "openapi.json"
    document.write_text(openapi_text(), encoding="utf-8")
    generated = tmp_path / "api.gen.ts"
    # The generator run as `npm run api-types` runs it, writing to the temp dir instead.
    words = json.loads(PACKAGE.read_text(encoding="utf-8"))["scripts"]["api-types"].split()
    assert words[:2] == ["openapi-typescript", "openapi.json"], words
    options = words[2:]
    options[options.index("--output") + 1] = str(generated)
    subprocess.run(
        [str(GENERATOR), str(document), *options],
        check=True,
        capture_output=True,
        timeout=GENERATOR_TIMEOUT_S,
        cwd=DASHBOARDS,
    )
    stale = [
        str(committed.relative_to(ROOT))
        for committed, fresh in ((DOCUMENT, document), (GENERATED, generated))
        if not committed.is_file() or committed.read_bytes() != fresh.read_bytes()
    ]
    assert not stale, (
        f"out of date with the API's OpenAPI document: {', '.join(stale)}; "
        "run `make api-types` and commit the result"
    )
