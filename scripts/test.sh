#!/usr/bin/env bash
# The test command: installs what the tests need (a no-op when up to date),
# then lint, format check, type check and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
python -m ruff check .
python -m ruff format --check .
python -m mypy
python -m pytest -q "$@"
