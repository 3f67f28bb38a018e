#!/usr/bin/env bash
# Installs tiny_dsl and its test tools into the current Python environment.
#
# llama-cpp-python (the embedded model's runtime) builds from source. Built with
# the default native CPU flags it crashes (SIGSEGV in the AMX kernels) on the
# machines we run on, so it is built with GGML_NATIVE=OFF, and never from pip's
# wheel cache, which may hold a natively built wheel from an earlier install.
# After installing, a one-token completion in a child process proves the build
# works; a crashing build is rebuilt once from source.
set -euo pipefail
cd "$(dirname "$0")/.."

export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
python -m pip install --quiet --disable-pip-version-check --no-cache-dir -e ".[dev]"

smoke_test() {
  python - <<'PY'
from tiny_dsl.runtime.providers.embedded import smoke_test
smoke_test()
PY
}

if ! smoke_test; then
  echo "install: the installed llama-cpp-python crashed; rebuilding it from source with $CMAKE_ARGS" >&2
  python -m pip install --quiet --disable-pip-version-check --no-cache-dir --force-reinstall \
    --no-deps --no-binary llama-cpp-python "llama-cpp-python>=0.3.2"
  smoke_test
fi
