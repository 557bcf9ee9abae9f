#!/usr/bin/env bash
# Install everything (with test tools) and run lint and the whole test suite. `.ci/run` calls this.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev || exit 1
# Debian's Chromium renders the HTML report in a test (headless screenshot).
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null || exit 1
fi
python3 -m ruff check rescore tests eval || exit 1
lint-imports || exit 1   # the layer and no-cycle contracts in pyproject.toml
python3 -m pytest -q "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
