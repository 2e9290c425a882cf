"""Write the hub's OpenAPI document (what /api/v1/openapi.json serves) to a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hub.app import create_app
from hub.settings import Settings

# The committed copy the dashboards' types are generated from (`make api-types`).
DASHBOARD_DOCUMENT = Path(__file__).resolve().parents[1] / "dashboards" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The document the hub serves, built from the code alone: no broker, no database."""
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def openapi_text() -> str:
    """The document as the committed file holds it: indented, non-ASCII kept readable."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to the path given (the dashboards' copy by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=DASHBOARD_DOCUMENT)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.write_text(openapi_text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
