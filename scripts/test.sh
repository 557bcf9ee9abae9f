#!/usr/bin/env bash
# Install everything (with test tools) and run lint and the whole test suite. `.ci/run` calls this.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev || exit 1
python3 -m ruff check rescore tests eval || exit 1
python3 -m pytest -q "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
