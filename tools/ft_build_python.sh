#!/usr/bin/env bash
# Print the path of a free-threaded CPython (built with --disable-gil), building
# it once from Debian's source package when no cached build exists (issue 14).
#
#   tools/ft_build_python.sh            reuse ~/.cache/ppp/cpython-ft-*, else build
#   PPP_FT_VERSIONS="3.13" tools/...    which version lines to try, newest first
#   PPP_FT_CACHE=/some/dir tools/...    cache folder (default ~/.cache/ppp)
#
# The build: a `deb-src` entry for Debian sid in its own sources file, `apt-get
# update`, `apt-get source --download-only pythonX.Y` (the orig tarball is the
# upstream CPython source), then `./configure --disable-gil --prefix=<cache>/
# cpython-ft-<version> --with-ensurepip=install` (no --enable-optimizations),
# `make -j2`, `make install`.  Build dependencies (Debian's usual headers) are
# installed with apt-get when missing.  Everything but the interpreter's path
# goes to stderr, so `PY=$(tools/ft_build_python.sh)` works.
set -euo pipefail

CACHE=${PPP_FT_CACHE:-$HOME/.cache/ppp}
VERSIONS=${PPP_FT_VERSIONS:-"3.14 3.13"}
JOBS=${PPP_FT_JOBS:-2}
SRC_LIST=/etc/apt/sources.list.d/ppp-sid-src.sources
BUILD_DEPS=(build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev
  libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev uuid-dev libgdbm-dev
  libgdbm-compat-dev libncurses-dev)

log() { echo "ft_build_python: $*" >&2; }

# A cached interpreter counts only when it finished installing (stamp) and runs
# as a free-threaded build.
is_ft() {
  "$1" -c 'import sys, sysconfig; sys.exit(sysconfig.get_config_var("Py_GIL_DISABLED") != 1)' \
    >/dev/null 2>&1
}

find_cached() {
  local v prefix exe
  for v in $VERSIONS; do
    # Newest patch release first.
    for prefix in $(ls -d "$CACHE"/cpython-ft-"$v".* 2>/dev/null | sort -rV); do
      exe="$prefix/bin/python${v}t"
      if [ -f "$prefix/.ppp-complete" ] && [ -x "$exe" ] && is_ft "$exe"; then
        echo "$exe"
        return 0
      fi
    done
  done
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

SRC_ENTRY='Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'

ensure_deb_src() {
  # Same archive and key as the machine's own Debian entry; sid first, trixie
  # as a fallback (the mirror may no longer serve an older sid upload).
  if [ "$(cat "$SRC_LIST" 2>/dev/null)" != "$SRC_ENTRY" ]; then
    log "adding deb-src entries for Debian sid and trixie: $SRC_LIST"
    echo "$SRC_ENTRY" | as_root tee "$SRC_LIST" >/dev/null
    as_root apt-get update -qq >&2
  elif [ -z "$(apt-cache showsrc python3.13 2>/dev/null | head -1)" ]; then
    as_root apt-get update -qq >&2
  fi
}

ensure_build_deps() {
  local missing=() p
  for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    # (waits up to 10 min for dpkg's lock: another apt-get may be installing)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
      install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# Download the newest source package that the mirror serves (sid's index can
# list an upload whose files are gone: 404); print "X.Y <orig tarball>".
fetch_source() {
  local v ver dl tarball
  mkdir -p "$CACHE/src"
  for v in $VERSIONS; do
    dl="$CACHE/src/python$v"
    tarball=$(ls "$dl"/python"$v"_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | sort -rV | head -1 || true)
    if [ -z "$tarball" ]; then
      for ver in $(apt-cache showsrc "python$v" 2>/dev/null | awk '/^Version:/ {print $2}' | sort -rVu); do
        log "apt-get source --download-only python$v=$ver"
        rm -rf "$dl" && mkdir -p "$dl"
        if (cd "$dl" && apt-get source -qq --download-only "python$v=$ver" >&2); then
          break
        fi
        log "python$v=$ver: not served, trying the next one"
      done
      tarball=$(ls "$dl"/python"$v"_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | sort -rV | head -1 || true)
    fi
    if [ -n "$tarball" ]; then
      echo "$v $tarball"
      return 0
    fi
    rm -rf "$dl"
  done
  log "no python source package could be downloaded (tried: $VERSIONS)"
  return 1
}

build() {
  local v tarball full prefix work
  local found
  found=$(fetch_source) || exit 1
  read -r v tarball <<<"$found"
  # python3.13_3.13.15.orig.tar.xz -> 3.13.15
  full=$(basename "$tarball" | sed -E 's/^python[0-9.]+_([0-9][^.]*\.[0-9]+\.[0-9a-z]+)\.orig\..*/\1/')
  prefix="$CACHE/cpython-ft-$full"
  work="$CACHE/build-$full"
  log "building CPython $full with --disable-gil into $prefix (several minutes)"
  rm -rf "$work" "$prefix"
  mkdir -p "$work"
  tar -xf "$tarball" -C "$work" --strip-components=1
  (
    cd "$work"
    ./configure --disable-gil --prefix="$prefix" --with-ensurepip=install >"$work.configure.log" 2>&1 ||
      { tail -40 "$work.configure.log" >&2; exit 1; }
    make -j"$JOBS" >"$work.make.log" 2>&1 || { tail -60 "$work.make.log" >&2; exit 1; }
    make install >"$work.install.log" 2>&1 || { tail -40 "$work.install.log" >&2; exit 1; }
  )
  local exe="$prefix/bin/python${v}t"
  is_ft "$exe" || { log "$exe is not a free-threaded build"; exit 1; }
  touch "$prefix/.ppp-complete"
  rm -rf "$work"
  log "built $("$exe" -VV | head -1)"
}

mkdir -p "$CACHE"
if exe=$(find_cached); then
  echo "$exe"
  exit 0
fi
# One build at a time; a second caller waits, then finds the cached build.
exec 9>"$CACHE/ft-build.lock"
flock 9
if exe=$(find_cached); then
  echo "$exe"
  exit 0
fi
ensure_deb_src
ensure_build_deps
build
find_cached
