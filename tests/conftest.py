"""Test configuration: fixtures live in tests/fix_*.py and are listed here."""

pytest_plugins = ["tests.fix_services", "tests.fix_hub", "tests.fix_api", "tests.fix_live"]
