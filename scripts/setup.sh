#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages that are missing,
# a virtualenv outside the repo (torch is large: it is installed once and reused), the project.
# Usage: scripts/setup.sh            (ESM_VENV overrides the venv location)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ESM_VENV:-$HOME/.cache/es-metric/venv}
PY=${PYTHON:-python3}
t0=$(date +%s)

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v mvn >/dev/null || need_apt+=(maven)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ "${ESM_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
fi
ls /usr/lib/jvm/*/bin/java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: please install: sudo apt-get install -y ${need_apt[*]}" >&2; exit 1
  fi
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
# pip skips what is already there; torch + torchvision (the large part) only on the first run
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e ".[all]"   # every extra: make test and make demo use them all
echo "setup: done in $(( $(date +%s) - t0 )) s (venv $VENV)"
