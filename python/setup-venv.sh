#!/usr/bin/env bash
# Makes the Python trainer SDK's virtual environment at .cache/python-venv (repo root) and installs
# python/requirements.txt plus the SDK itself (editable). Reused as-is when present and its recorded
# requirements hash matches: PyTorch from PyPI is several GB with its CUDA wheels, too heavy to
# install on every run. Prints the venv's python path on its last line.
#   bash python/setup-venv.sh            # make or reuse
#   FLYWHEEL_VENV=/tmp/v bash python/setup-venv.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${FLYWHEEL_VENV:-$root/.cache/python-venv}"
python="${PYTHON:-python3}"
want="$(cat "$here/requirements.txt" "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.flywheel-requirements.sha256"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "python venv reused: $venv" >&2
  echo "$venv/bin/python"
  exit 0
fi

# A lock so that two test runs starting at once do not install into one venv together.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

echo "python venv: installing into $venv (requirements changed or venv missing)" >&2
start=$(date +%s)
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$here" >&2
echo "$want" >"$stamp"
echo "python venv: installed in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv/bin/python"
