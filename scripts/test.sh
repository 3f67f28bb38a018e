#!/usr/bin/env bash
# The test command: installs what the tests need (a no-op when up to date),
# then lint, format check, type check, architecture contracts and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
# The report test renders report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ||
    echo "test.sh: could not install chromium; the browser test will be skipped" >&2
fi
python -m ruff check .
python -m ruff format --check .
python -m mypy
lint-imports
python -m pytest -q "$@"
