#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize` and validates each object offline against the API
# schemas of Kubernetes 1.34 (deploy/validate_schemas.mjs: types, required fields, unknown fields),
# installing the npm packages that carry them into $PTQ_K8S_SCHEMAS (default
# ~/.cache/ptq-k8s-schemas) the first time. Exits 77 (skipped, saying why) without node, npm or
# kubectl, or when the packages cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in node npm kubectl; do
  command -v "$tool" >/dev/null || { echo "skipped: no $tool on the PATH"; exit 77; }
done
packages=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.8.1)
dir=${PTQ_K8S_SCHEMAS:-$HOME/.cache/ptq-k8s-schemas}
stamp="$dir/installed.txt"  # what was installed there
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  mkdir -p "$dir"
  if ! npm install --prefix "$dir" --no-audit --no-fund --no-save "${packages[@]}" >"$dir/npm.log" 2>&1; then
    echo "skipped: npm install ${packages[*]} failed: $(tail -n 1 "$dir/npm.log")"
    exit 77
  fi
  echo "${packages[*]}" >"$stamp"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for overlay in deploy/overlays/*/; do
  kubectl kustomize "$overlay" >"$tmp/$(basename "$overlay").yaml" 2>"$tmp/kustomize.log" ||
    { cat "$tmp/kustomize.log" >&2; exit 1; }
done
node deploy/validate_schemas.mjs "$dir/node_modules" "$tmp"/*.yaml
