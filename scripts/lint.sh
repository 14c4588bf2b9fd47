#!/usr/bin/env bash
# The linter CI runs before the tests: ruff, its rules in pyproject.toml. Arguments go to
# `ruff check`: `bash scripts/lint.sh --fix` sorts imports and drops unused ones.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" -r "$(dirname "$0")/../requirements-test.txt"
ruff check "$@" .
