# Shared set-up for scripts/test and scripts/demo: the Debian packages groupgrad needs, their
# installation, and configuring a meson build directory. Source it; it defines functions and GG_ROOT only.

GG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The one list of Debian 12 packages needed to build, test and install groupgrad, and to run the demo
# (dataset-fashion-mnist: the IDX files under /usr/share/datasets/fashion-mnist).
# gcc brings libgomp (OpenMP) and the ASan/UBSan runtimes; libc6-dev is only a Recommends of gcc.
GG_PACKAGES=(
    meson ninja-build pkg-config gcc libc6-dev
    libblis-dev libxsmm-dev libcriterion-dev zlib1g-dev libjansson-dev
    python3 python3-numpy
    dataset-fashion-mnist
)

# Print the packages of GG_PACKAGES that are not installed, one per line.
gg_missing_packages() {
    local p status
    for p in "${GG_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [ "$status" = "installed" ] || echo "$p"
    done
}

# Install whatever is missing (one apt-get update, one apt-get install); does nothing when all are present.
# Not root, or no dpkg/apt-get: print what to run and return 1.
gg_ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "groupgrad: dpkg-query not found; this script expects Debian 12. Needed packages:" >&2
        echo "  ${GG_PACKAGES[*]}" >&2
        return 1
    fi
    local missing
    missing="$(gg_missing_packages | tr '\n' ' ')"
    missing="${missing% }"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "groupgrad: missing Debian packages: $missing" >&2
        echo "Install them as root with:" >&2
        echo "  apt-get update && apt-get install -y --no-install-recommends $missing" >&2
        return 1
    fi
    echo "groupgrad: installing missing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    apt-get update -q && apt-get install -y -q --no-install-recommends $missing
}

# gg_setup_build DIR [meson options...]: configure DIR, reusing it when it is already a build directory
# (options given are applied on reconfigure). With CI=true warnings are errors.
gg_setup_build() {
    local dir="$1"
    shift
    local opts=("$@")
    if [ "${CI:-}" = "true" ]; then
        opts+=(--werror)
    fi
    if [ -f "$GG_ROOT/$dir/meson-private/coredata.dat" ]; then
        meson setup --reconfigure "$GG_ROOT/$dir" "$GG_ROOT" "${opts[@]}"
    else
        meson setup "$GG_ROOT/$dir" "$GG_ROOT" "${opts[@]}"
    fi
}
