#!/usr/bin/env bash
# One command to set up and run stackpanel on Debian/Ubuntu.
#
#   ./bootstrap.sh [PROFILE]   install what is missing, then open the panel (headless on a machine
#                              without a display: runs PROFILE and prints the URL to open)
#   ./bootstrap.sh test [ARGS] install what is missing, then run the whole test suite (ARGS go to pytest)
#
# System packages come from apt (as root, or through sudo); when neither is possible the exact
# install line is printed. Python packages go into ./.venv, pinned by pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"

mode=run
if [ "${1:-}" = "test" ]; then mode=test; shift; fi

# Servers, and what a Qt window needs; the test suite also wants a virtual display and wrk.
# libnss3-tools: `stackpanel trust` adds the local CA to Chromium's and Firefox's certificate stores.
# php-fpm: an apache node's `php: true` routes (Debian 12: php8.2-fpm, binary php-fpm8.2).
apt_packages=(nginx apache2 php-fpm python3-venv libnss3-tools ca-certificates
  libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-randr0 libxcb-xfixes0)
# The packaging tests (-m packaging) build the .deb with Debian's tools, check it with lintian and
# desktop-file-validate, and install it into a clean mmdebstrap root (ip, xwininfo for the window).
# The HTTPS tests verify with curl and load pages in headless Chromium; the export tests validate
# with `docker-compose config` (no daemon: recommends are not installed) and `systemd-analyze verify`.
if [ "$mode" = test ]; then apt_packages+=(xvfb wrk mmdebstrap dpkg-dev lintian desktop-file-utils x11-utils iproute2
  curl chromium docker-compose systemd); fi

say() { printf '\033[1mstackpanel:\033[0m %s\n' "$*" >&2; }

install_system_packages() {
  command -v dpkg-query >/dev/null || { say "not a Debian/Ubuntu system: install nginx and apache (httpd) yourself, then rerun"; return 0; }
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo";
    elif command -v sudo >/dev/null && [ -t 0 ]; then sudo="sudo";
    else
      say "missing system packages; install them with:"
      echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  say "installing ${missing[*]}"
  # Debian's postinst scripts would start the system services: nginx and apache2 on port 80, and a
  # php-fpm pool on /run/php. Stacks run their own processes in their run directories and use none
  # of them, so none is started now (policy-rc.d exit 101 = action forbidden), as packaging/install.sh
  # does; the packages stay installed and enabled as Debian sets them up.
  local policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e "$policy" ]; then
    printf '%s\n' '#!/bin/sh' "# written by stackpanel's bootstrap.sh for the length of an install, then removed" \
      'for a in "$@"; do case "$a" in -*) continue ;; nginx|apache2|apache-htcacheclean|php*-fpm) exit 101 ;;' \
      '*) exit 0 ;; esac; done' 'exit 0' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    ours=1
  fi
  local rc=0
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  } || rc=$?
  if [ -n "$ours" ]; then $sudo rm -f "$policy"; fi
  return $rc
}

python_bin() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  say "stackpanel needs Python 3.11 or newer: sudo apt-get install -y python3 python3-venv"; exit 1
}

install_python_env() {
  local stamp=.venv/.stackpanel-installed
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$(python_bin)" -m venv .venv
  fi
  # Reinstall only when the pinned dependencies changed.
  if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    say "installing Python packages into .venv (pinned in pyproject.toml)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    cp pyproject.toml "$stamp"
  fi
}

install_system_packages
install_python_env

if [ "$mode" = test ]; then
  export QT_QPA_PLATFORM=offscreen
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/stackpanel gui "$@"
