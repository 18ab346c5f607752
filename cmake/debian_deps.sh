# Sourced by tests/run.sh and bench/run.sh.
# attnkit_require_packages PKG...: makes sure the Debian packages are installed.
# As root, installs the missing ones with apt-get; otherwise prints the exact
# apt-get line to run and exits 1.
attnkit_require_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "attnkit: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "attnkit: missing Debian packages. Run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# Number of parallel jobs: all cores.
attnkit_jobs() { nproc 2>/dev/null || echo 2; }
