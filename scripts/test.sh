#!/usr/bin/env bash
# Set up the environment (first run: creates .venv and installs requirements, and the export
# packages that tests/test_export.py needs) and run every test.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" "pytest>=7" -r "$(dirname "$0")/../requirements-export.txt"
python -m pytest -q tests "$@"
