#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: SWORD modules, a virtual environment in .venv,
# the CPU build of torch 2.13.0 first (any other spec pulls a multi-GB CUDA build), then encdec
# with its dev extras. Re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

missing=()
for pkg in sword-text-sparv sword-text-web sword-text-kjv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
# the attention viewer's test drives a real browser; without one that test skips and says why
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (for the attention viewer test)"
  apt_install chromium || echo "setup: chromium could not be installed; tests/test_attention_viewer.py will skip"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; python3 -m venv .venv; }
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  .venv/bin/pip install -q torch==2.13.0
fi
# always: a no-op when everything is satisfied, and picks up new dependencies of pyproject.toml
.venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
