#!/usr/bin/env bash
# Set up the environment (first run: creates .venv and installs requirements) and run every test.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" "pytest>=7"
python -m pytest -q tests "$@"
