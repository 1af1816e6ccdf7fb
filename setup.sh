#!/usr/bin/env bash
# Create .venv/ at the repository root and install dodai into it.
#   ./setup.sh          runtime only (dodai + torch)
#   ./setup.sh --test   also the reference libraries used by tests and benchmarks
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned: on a CPU-only machine this resolves to the local CPU wheel;
# on a GPU machine pip picks the matching CUDA build from PyPI.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
# The python tool runs model-written code under bubblewrap (an OS sandbox); without it the tool refuses to run.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
      || echo "could not install bubblewrap; the python tool needs it (apt-get install bubblewrap)" >&2
  else
    echo "note: the python tool needs bubblewrap: apt-get install bubblewrap (or dnf/pacman install bubblewrap)" >&2
  fi
fi
echo "dodai is installed in .venv/ (try: .venv/bin/dodai --help)" >&2
