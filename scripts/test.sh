#!/usr/bin/env bash
# Set up the environment (first run: creates .venv and installs requirements, the test packages and the export
# packages that tests/test_export.py needs) and run every test, one pytest-xdist worker per core;
# each test file stays on one worker, so its module fixtures (a reference training run, say) are
# made once. Arguments go to pytest: `bash scripts/test.sh tests/test_models.py -n 0` runs that
# file alone, in this process; with none, pytest.ini's testpaths (tests/) run.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" -r "$(dirname "$0")/../requirements-test.txt" -r "$(dirname "$0")/../requirements-export.txt"
python -m pytest -q -n auto --dist loadfile "$@"
