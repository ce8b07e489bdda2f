#!/usr/bin/env bash
# Makes (or reuses) the Python trainer SDK's virtual environment, .cache/python-venv at the repo
# root, and prints its python's path on its last line of stdout:
#
#   bash python/setup-venv.sh                     # make or reuse
#   "$(bash python/setup-venv.sh | tail -1)" -m pytest python/tests
#
# Two layers, because PyTorch from PyPI is heavy (the default Linux wheel pulls the CUDA
# libraries: about 5.5 GB installed, 13 minutes here):
# - the dependencies of python/requirements.txt, installed once per requirements hash (and
#   Python version) into a venv outside the clone, ${FLYWHEEL_PYTHON_DEPS:-~/.cache/flywheel}/
#   python-deps-<hash>, so every clone on the machine (CI's fresh clone included) shares them
#   (only its site-packages is used: the venv is renamed into place once complete);
# - the venv itself (a few MB), whose site-packages points at that directory and at python/
#   (the SDK, editable) through a .pth file. Reused when present and its stamp matches.
# A changed requirements.txt installs a new dependency directory; old ones stay until deleted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${FLYWHEEL_VENV:-$root/.cache/python-venv}"
deps_root="${FLYWHEEL_PYTHON_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
python="${PYTHON:-python3}"

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
hash="$( { cat "$here/requirements.txt"; echo "python $pyver"; } | sha256sum | cut -c1-16)"
deps="$deps_root/python-deps-$hash"
stamp="$venv/.flywheel-stamp"
want="$deps $here"

ready() { [[ -x "$venv/bin/python" && -f "$deps/.complete" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; }
if ready; then
  echo "python venv reused: $venv (dependencies in $deps)" >&2
  echo "$venv/bin/python"
  exit 0
fi

# One installer at a time per machine: two test runs starting together would install twice.
mkdir -p "$deps_root"
exec 9>"$deps_root/.lock"
flock 9

if [[ ! -f "$deps/.complete" ]]; then
  echo "python deps: installing python/requirements.txt into $deps (once per requirements hash)" >&2
  start=$(date +%s)
  rm -rf "$deps.partial"
  "$python" -m venv "$deps.partial"
  "$deps.partial/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  touch "$deps.partial/.complete"
  mv "$deps.partial" "$deps"
  echo "python deps: installed in $(( $(date +%s) - start )) s, $(du -sh "$deps" | cut -f1)" >&2
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The SDK first (editable: python/ itself), then the shared dependencies.
printf '%s\n%s\n' "$here" "$deps/lib/python$pyver/site-packages" >"$site/flywheel-trainer.pth"
"$venv/bin/python" -c 'import flywheel_trainer, confluent_kafka, fastavro, pytest' >&2
echo "$want" >"$stamp"
echo "python venv ready: $venv" >&2
echo "$venv/bin/python"
