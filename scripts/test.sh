#!/usr/bin/env bash
# The test suite: the notebooks' own asserts (nbdev-test), then pytest (CLI, app, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONUNBUFFERED=1
# a private torch hub cache, so tests exercise the bundled-weights path and never touch ~/.cache
export TORCH_HOME="${TORCH_HOME:-$PWD/.venv/torch-home}"
# nothing may be downloaded: point weight downloads at a closed local port so offline behaviour is tested
export RECYCLE_CLASSIFIER_WEIGHTS_URL="${RECYCLE_CLASSIFIER_WEIGHTS_URL:-http://127.0.0.1:9}"
# one feature cache for this test run (notebooks and pytest share it), never the user's
export RECYCLE_CLASSIFIER_CACHE_DIR="${RECYCLE_CLASSIFIER_CACHE_DIR:-$(mktemp -d)/features}"
# the app's browser test drives Debian's Chromium (never a downloaded browser)
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium for the browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "== the package is what the notebooks export (no hand edits to generated modules)"
"$BIN/nbdev-export"
if [ -d .git ] && ! git diff --quiet -- recycle_classifier; then
  git --no-pager diff --stat -- recycle_classifier
  echo "error: recycle_classifier/ differs from what nbs/ exports: edit the notebooks and run nbdev-export"; exit 1
fi
echo "== nbdev-test (notebooks)"
"$BIN/nbdev-test" --n-workers 2 --timing
echo "== pytest"
"$BIN/pytest" -q --durations=25 tests
