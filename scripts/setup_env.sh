# Sourced by the other scripts: make (once) and activate the project's virtual environment
# in .venv, with requirements.txt installed. VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" "$@"
cd "$ROOT"
