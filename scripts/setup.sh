# Sourced by the README's commands: installs what is missing, then configures
# and builds modhost into $BUILD_DIR (default: build/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}

# Debian packages and a file each one provides, to see what is missing.
declare -A PROVIDES=(
  [cmake]=/usr/bin/cmake
  [g++]=/usr/bin/g++
  [make]=/usr/bin/make
  [python3-dev]=/usr/include/python3*/Python.h
  [pybind11-dev]=/usr/include/pybind11/pybind11.h
  [libgtest-dev]=/usr/include/gtest/gtest.h
  [libgmock-dev]=/usr/include/gmock/gmock.h
  [libbenchmark-dev]=/usr/include/benchmark/benchmark.h
  [libcli11-dev]=/usr/include/CLI/CLI.hpp
  # The real-package reload corpus (tests/python/test_real_packages.py).
  [python3-jinja2]=/usr/lib/python3/dist-packages/jinja2/__init__.py
  [python3-click]=/usr/lib/python3/dist-packages/click/__init__.py
  [python3-flask]=/usr/lib/python3/dist-packages/flask/__init__.py
  [python3-attr]=/usr/lib/python3/dist-packages/attr/__init__.py
  [python3-jsonschema]=/usr/lib/python3/dist-packages/jsonschema/__init__.py
  [python3-idna]=/usr/lib/python3/dist-packages/idna/__init__.py
  [python3-networkx]=/usr/lib/python3/dist-packages/networkx/__init__.py
  # Copied by single deep-reload regression tests (tests/python/test_deep_*.py).
  [python3-toolz]=/usr/lib/python3/dist-packages/toolz/__init__.py
  [python3-pygments]=/usr/lib/python3/dist-packages/pygments/__init__.py
  # The installed stub, checked by a type checker (package.stubs).
  [mypy]=/usr/bin/mypy
  # pytest's own assertion-rewriting loader (tests/python/test_cache_loaders.py).
  [python3-pytest]=/usr/lib/python3/dist-packages/pytest/__init__.py
)
missing=()
for package in "${!PROVIDES[@]}"; do
  # shellcheck disable=SC2086  # the glob must expand
  ls ${PROVIDES[$package]} >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "modhost: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "modhost: missing packages; run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Link the distribution's Python (the one python3-dev belongs to), not
# whichever python3 happens to be first on PATH, unless MODHOST_PYTHON_EXECUTABLE
# names another (scripts/test-python does).
python_hint=()
if [ -n "${MODHOST_PYTHON_EXECUTABLE:-}" ]; then
  python_hint=(-DPython3_EXECUTABLE="$MODHOST_PYTHON_EXECUTABLE")
elif [ -x /usr/bin/python3 ]; then
  python_hint=(-DPython3_EXECUTABLE=/usr/bin/python3)
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${python_hint[@]}" \
  ${MODHOST_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
