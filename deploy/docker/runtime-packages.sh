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
# "library<TAB>path a package may list it under": usrmerge means a package may list it under /lib
# or /usr/lib, whichever ldd does not show, and under its real name or a link's.
candidates=$(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$ldd_out" | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  if [ -n "$skip" ] && [[ "$real" == "$skip"/* || "$lib" == "$skip"/* ]]; then continue; fi
  for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
    printf '%s\t%s\n' "$lib" "$p"
  done
done)
[ -n "$candidates" ] || exit 0
# One dpkg-query for all (it reads the whole package database each time): "pkg[:arch][, pkg]: path".
owners=$(cut -f2 <<<"$candidates" | sort -u | xargs dpkg-query -S 2>/dev/null || true)
awk -F'\t' '
  NR == FNR { i = index($0, ": "); if (i) { pkg = substr($0, 1, i - 1); sub(/[:,].*/, "", pkg)
              owner[substr($0, i + 2)] = pkg }; next }
  { if (!($1 in found)) found[$1] = ""; if (found[$1] == "" && ($2 in owner)) found[$1] = owner[$2] }
  END { bad = 0
        for (lib in found) if (found[lib] == "") { print "runtime-packages.sh: no installed package holds " lib > "/dev/stderr"; bad = 1 }
        else print found[lib]
        exit bad }' <(printf '%s\n' "$owners") <(printf '%s\n' "$candidates") | sort -u
