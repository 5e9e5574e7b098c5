#!/bin/sh
# Install stackpanel from this folder with no network: the stackpanel .deb and every Debian
# package it needs that a fresh Debian install lacks (computed against a minimal Debian root).
# Packages already installed at the same or a newer version are left as they are.
#
#   sudo ./install.sh              install
#   sudo ./install.sh --selftest   install, then run `stackpanel selftest` (PASS/FAIL per profile)
#
# Debian's nginx and apache2 services: when this bundle is what brings them to the machine, they
# are installed (enabled, as Debian does) but not started during the install, because both listen
# on port 80 and the second one's start would fail the whole install. stackpanel never uses these
# services: it runs the nginx and apache2 binaries as the user's own processes on its own ports.
#
# Remove: sudo apt-get purge --autoremove stackpanel   (also removes the packages this bundle
# added, which are marked as installed automatically)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
selftest=no
for arg in "$@"; do
    case "$arg" in
        --selftest) selftest=yes ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
    echo "install.sh: run as root" >&2
    exit 1
fi
cd "$here"
say() { printf 'stackpanel install: %s\n' "$*"; }

sha256sum --quiet -c SHA256SUMS || { echo "install.sh: files of this bundle are damaged (SHA256SUMS)" >&2; exit 1; }

arch=$(dpkg --print-architecture)
if [ "$arch" != "$(cat ARCH)" ]; then
    echo "install.sh: this bundle is for $(cat ARCH), this machine is $arch" >&2
    exit 1
fi
codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
if [ "$codename" != "$(cat SUITE)" ]; then
    say "warning: this bundle was made for $(cat SUITE), this machine runs ${codename:-an unknown release}"
fi

# Which of our packages this machine lacks (or has older).
files=""
added=""
for deb in debs/*.deb; do
    pkg=$(dpkg-deb -f "$deb" Package)
    ver=$(dpkg-deb -f "$deb" Version)
    status=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>/dev/null || true)
    case "$status" in
        "ii  "*)
            if dpkg --compare-versions "${status#ii  }" ge "$ver"; then continue; fi ;;
        *)
            [ "$pkg" = stackpanel ] || added="$added $pkg" ;;
    esac
    files="$files $here/$deb"
done
if [ -z "$files" ]; then
    say "everything is installed already"
else
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        cat > "$policy" <<'EOF'
#!/bin/sh
# Written by stackpanel's install.sh for the length of the install, then removed: Debian's nginx
# and apache2 both want port 80, so they are not started now (exit 101 = action forbidden).
for arg in "$@"; do
    case "$arg" in -*) continue ;; nginx|apache2|apache-htcacheclean) exit 101 ;; *) exit 0 ;; esac
done
exit 0
EOF
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT INT TERM
    fi
    say "installing$(echo "$files" | wc -w | sed 's/^/ /') packages from $here/debs (no network used)"
    # No package sources at all: apt resolves among these files and what is installed, so there
    # is nothing it could download.
    nosrc=$(mktemp -d)
    touch "$nosrc/none.list"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dir::Etc::SourceList="$nosrc/none.list" -o Dir::Etc::SourceParts="$nosrc" \
        -o Dpkg::Use-Pty=0 $files
    rm -rf "$nosrc"
    if [ -n "$added" ]; then
        apt-mark auto $added >/dev/null  # so `apt-get purge --autoremove stackpanel` takes them too
    fi
    if [ -e "$policy" ] && grep -q "stackpanel's install.sh" "$policy"; then rm -f "$policy"; fi
fi

say "done: $(stackpanel --version). Open it from the applications menu, or run: stackpanel"
if [ "$selftest" = yes ]; then
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v runuser >/dev/null 2>&1; then
        exec runuser -u "$SUDO_USER" -- stackpanel selftest
    fi
    exec stackpanel selftest
fi
