#!/usr/bin/env bash
# Prints the Debian (or Ubuntu) packages that hold the shared libraries the given binaries load, one
# a line: what a runtime image must install for them, found where they were built. Libraries under
# the folder given with --skip (e.g. /opt/libtorch, copied into the image as they are) are left out.
# Fails, naming it, on a library that ldd cannot find or that no installed package holds.
# Usage: runtime-packages.sh [--skip DIR] BINARY...
set -euo pipefail
skip=""
if [ "${1:-}" = "--skip" ]; then
  skip=$2
  shift 2
fi
ldd_out=$(for bin in "$@"; do ldd "$bin"; done)
if grep -q "not found" <<<"$ldd_out"; then
  echo "runtime-packages.sh: libraries not found: $(grep "not found" <<<"$ldd_out" | sort -u | tr -s ' \t\n' ' ')" >&2
  exit 1
fi
declare -A candidates  # library -> the paths a package may list it under
paths=()
for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$ldd_out" | sort -u); do
  real=$(readlink -f "$lib")
  if [ -n "$skip" ] && [[ "$real" == "$skip"/* || "$lib" == "$skip"/* ]]; then continue; fi
  # usrmerge: a package may list the library under /lib or /usr/lib, whichever ldd does not show.
  c=$(printf '%s\n' "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}" | sort -u)
  candidates[$lib]=$c
  mapfile -t -O "${#paths[@]}" paths <<<"$c"
done
[ ${#candidates[@]} -gt 0 ] || exit 0
# One dpkg-query for all (it reads the whole package database each time): "pkg[:arch][, pkg]: path".
owners=$(dpkg-query -S "${paths[@]}" 2>/dev/null || true)
for lib in "${!candidates[@]}"; do
  package=""
  while read -r path; do
    package=$(awk -v p="$path" 'index($0, ": " p) && substr($0, index($0, ": " p) + 2) == p {
      split($0, a, ":"); print a[1]; exit }' <<<"$owners")
    [ -n "$package" ] && break
  done <<<"${candidates[$lib]}"
  if [ -z "$package" ]; then
    echo "runtime-packages.sh: no installed package holds $lib" >&2
    exit 1
  fi
  echo "$package"
done | sort -u
