#!/usr/bin/env bash
# Install test: `meson install` a build into a temporary DESTDIR, then build an outside program against it
# through pkg-config only, run it, and check that every installed public header compiles on its own.
# Usage: scripts/install_check.sh BUILDDIR. Prints one TAP-style "ok"/"not ok" line per check; exits 1 if
# any failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:?usage: install_check.sh BUILDDIR}" && pwd)"
CC="${CC:-cc}"
CSTD=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
failed=0
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gg-install.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

ok() { echo "ok - install: $1"; }
not_ok() {
    echo "not ok - install: $1"
    failed=$((failed + 1))
    [ -s "$TMP/log" ] && sed -n '1,40s/^/#   /p' "$TMP/log"
    return 0
}
# check NAME CMD...: run CMD with its output in $TMP/log, report the result.
check() {
    local name="$1"
    shift
    if "$@" >"$TMP/log" 2>&1; then ok "$name"; else not_ok "$name"; fi
}

DEST="$TMP/dest"
if ! meson install -C "$BUILD" --destdir "$DEST" --quiet >"$TMP/log" 2>&1; then
    not_ok "meson install into DESTDIR"
    exit 1
fi
ok "meson install into DESTDIR"

# The libdir is <prefix>/lib/<multiarch triple> on Debian; find it instead of guessing.
pc="$(find "$DEST" -name groupgrad.pc -print -quit)"
if [ -z "$pc" ]; then
    echo "groupgrad.pc not found under $DEST" >"$TMP/log"
    not_ok "groupgrad.pc installed"
    exit 1
fi
ok "groupgrad.pc installed"
libdir="$(dirname "$(dirname "$pc")")"
export PKG_CONFIG_PATH="$(dirname "$pc")"
# The .pc file names the final prefix (/usr/local); the sysroot maps its -I/-L paths into DESTDIR.
export PKG_CONFIG_SYSROOT_DIR="$DEST"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The umbrella header is included as <groupgrad/groupgrad.h>: its parent is <prefix>/include, on the
# compiler's default search path for the /usr/local prefix but not inside DESTDIR, so add it here.
incroot="$(dirname "$(find "$DEST" -path '*/include/groupgrad/groupgrad.h' -print -quit)")"
incroot="$(dirname "$incroot")"
CSTD+=(-I"$incroot")

# A dynamically linked user needs only -lgroupgrad (BLIS, libxsmm, zlib stay in Libs.private).
read -r -a CFLAGS_PC <<<"$(pkg-config --cflags groupgrad 2>"$TMP/log")" || true
read -r -a LIBS_PC <<<"$(pkg-config --libs groupgrad 2>>"$TMP/log")" || true
if [ "${#LIBS_PC[@]}" -eq 0 ]; then
    not_ok "pkg-config --cflags --libs groupgrad"
else
    ok "pkg-config --cflags --libs groupgrad: ${CFLAGS_PC[*]} ${LIBS_PC[*]}"
fi

prog="$TMP/use_groupgrad"
check "use_groupgrad.c compiles and links against the installed library" \
    "$CC" "${CSTD[@]}" "$ROOT/tests/install/use_groupgrad.c" -o "$prog" "${CFLAGS_PC[@]}" "${LIBS_PC[@]}"

run_use() {
    [ -x "$prog" ] || { echo "use_groupgrad was not built"; return 1; }
    # It must load the installed libgroupgrad, not the one in the build tree.
    ldd "$prog" | grep 'libgroupgrad' | grep -qF "$DEST" || { ldd "$prog"; return 1; }
    local out want
    local rc=0
    out="$("$prog")" || rc=$?
    echo "$out"
    [ "$rc" -eq 0 ] || { echo "use_groupgrad exited with status $rc"; return 1; }
    echo "$out"
    want="version $(pkg-config --modversion groupgrad)"
    grep -qx "$want" <<<"$out" || { echo "expected a line '$want'"; return 1; }
    grep -qx "sum 15" <<<"$out" || { echo "expected a line 'sum 15'"; return 1; }
}
check "use_groupgrad runs with the installed library and prints the right version and values" run_use

# Every public header compiles alone, and twice (include guards), with only the installed include path.
headers=("$incroot"/groupgrad/*.h)
[ -e "${headers[0]}" ] || { echo "no headers in $incroot/groupgrad" >"$TMP/log"; not_ok "headers installed"; }
for h in "${headers[@]}"; do
    [ -e "$h" ] || continue
    name="$(basename "$h")"
    printf '#include <groupgrad/%s>\n#include <groupgrad/%s>\n' "$name" "$name" >"$TMP/h.c"
    check "header $name compiles on its own" \
        "$CC" "${CSTD[@]}" -fsyntax-only "${CFLAGS_PC[@]}" "$TMP/h.c"
done

[ "$failed" -eq 0 ]
