# Sourced by tests/run.sh and bench/run.sh.
#
# attnkit_require_packages PKG...: makes sure the Debian packages are
#   installed. As root, installs the missing ones with apt-get; otherwise
#   prints the exact apt-get line to run and exits 1.
# attnkit_optional_packages PKG...: the same for packages attnkit can do
#   without (a test is skipped with a message without them). As root, installs
#   those the package index knows; never fails; otherwise prints the line.
# attnkit_generator BUILD_DIR: the CMake generator options for BUILD_DIR.
# attnkit_jobs: the number of parallel jobs.

attnkit_apt_updated=0

attnkit_missing_packages() {
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      echo "$pkg"
    fi
  done
}

attnkit_apt_update() {
  if [ "$attnkit_apt_updated" -eq 0 ]; then
    apt-get update -qq || return 1
    attnkit_apt_updated=1
  fi
}

attnkit_require_packages() {
  local missing
  missing=$(attnkit_missing_packages "$@" | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "attnkit: installing $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    attnkit_apt_update
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "attnkit: missing Debian packages. Run:" >&2
    echo "  sudo apt-get install -y $missing" >&2
    exit 1
  fi
}

attnkit_optional_packages() {
  local missing pkg available=""
  missing=$(attnkit_missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! attnkit_apt_update; then
      echo "attnkit: apt-get update failed; optional packages skipped:" $missing >&2
      return 0
    fi
    for pkg in $missing; do
      if apt-cache show "$pkg" >/dev/null 2>&1; then
        available="$available $pkg"
      else
        echo "attnkit: optional package $pkg is not available here; its test is skipped" >&2
      fi
    done
    if [ -n "$available" ]; then
      echo "attnkit: installing (optional)$available" >&2
      # shellcheck disable=SC2086
      apt-get install -y -qq --no-install-recommends $available >/dev/null ||
        echo "attnkit: could not install$available; the tests that need them are skipped" >&2
    fi
  else
    echo "attnkit: optional Debian packages (some tests are skipped without them):" >&2
    echo "  sudo apt-get install -y $(echo $missing)" >&2
  fi
  return 0
}

# attnkit_generator BUILD_DIR: "-G Ninja" for a build directory not configured
#   yet (Ninja compiles a target's sources while the targets it links are
#   still being built, where make waits for them, so every core stays busy to
#   the end of the build); nothing for one configured before (it keeps its
#   generator) or without ninja.
attnkit_generator() {
  if [ ! -f "$1/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then echo "-G Ninja"; fi
}

# Number of parallel jobs: all cores.
attnkit_jobs() { nproc 2>/dev/null || echo 2; }
