#!/usr/bin/env bash
# Builds the Debian package media-edge_<version>_<arch>.deb from a built binary, with
# `dpkg-deb --build --root-owner-group` from a staging folder (no cargo-deb):
#
#   /usr/bin/media-edge                       the binary (stripped unless --no-strip)
#   /lib/systemd/system/media-edge.service    systemd/media-edge.service, its /usr/local/bin
#                                             paths changed to /usr/bin
#   /etc/media-edge/media-edge.toml           conf/media-edge.toml (a conffile), pointing at
#                                             /usr/share/media-edge/samples and /var/lib/media-edge
#   /etc/media-edge/cloudflare-ips.txt        conf/cloudflare-ips.txt (a conffile)
#   /usr/share/media-edge/samples/            conf/samples
#   /usr/share/doc/media-edge/                README.md.gz, copyright, changelog.gz
#   /usr/share/man/man1/media-edge.1.gz       made from the binary's --help
#
# The maintainer scripts are packaging/deb/{postinst,prerm,postrm}: the system user and group
# media-edge, /var/lib/media-edge, the unit enabled (and started when systemd runs); purge
# removes the state, the user and the group. Depends: dpkg-shlibdeps' answer for the binary
# (package dpkg-dev), else the packages owning the libraries the binary names; plus adduser.
#
# Usage: scripts/package-deb.sh --binary PATH [--out DIR] [--version V]
#          [--maintainer "Name <email>"] [--no-strip] [--compression xz|gzip|zstd|none]
# The version defaults to the media-edge crate's (proxy/Cargo.toml, or the workspace's);
# --out to target/debian. Prints the path of the package on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=media-edge

die() {
  echo "package-deb: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "${1:-2}"
}

BINARY="" OUT="$ROOT/target/debian" VERSION="" MAINTAINER="" STRIP=1 COMPRESSION=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --maintainer) MAINTAINER=${2:?--maintainer needs a value}; shift 2 ;;
    --no-strip) STRIP=0; shift ;;
    --compression) COMPRESSION=${2:?--compression needs a type}; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "package-deb: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$BINARY" ] || { echo "package-deb: --binary is required" >&2; usage; }
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "$BINARY is not an executable file"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (package dpkg)"
case "$COMPRESSION" in xz | gzip | zstd | none) ;; *) die "--compression $COMPRESSION: one of xz, gzip, zstd, none" ;; esac

# `version = "..."` of a [section] of a Cargo.toml, empty when it has none.
toml_version() {
  awk -v want="[$2]" '
    /^[[:space:]]*\[/ { in_section = ($0 == want) ; next }
    in_section && /^version[[:space:]]*=[[:space:]]*"/ {
      sub(/^version[[:space:]]*=[[:space:]]*"/, ""); sub(/".*/, ""); print; exit
    }' "$1"
}

if [ -z "$VERSION" ]; then
  VERSION=$(toml_version "$ROOT/proxy/Cargo.toml" package)
  [ -n "$VERSION" ] || VERSION=$(toml_version "$ROOT/Cargo.toml" workspace.package)
  [ -n "$VERSION" ] || die "no version in proxy/Cargo.toml or the workspace Cargo.toml"
  # A Cargo pre-release (1.2.0-rc.1) sorts before its release in Debian as 1.2.0~rc.1.
  VERSION=${VERSION/-/\~}
fi
dpkg --validate-version "$VERSION" >/dev/null 2>&1 || die "version $VERSION is not a valid Debian version"
ARCH=$(dpkg --print-architecture)

GIT_TIME=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-${GIT_TIME:-$(date +%s)}}
if [ -z "$MAINTAINER" ]; then
  if [ -n "${DEBEMAIL:-}" ]; then
    MAINTAINER="${DEBFULLNAME:-Media Edge maintainers} <$DEBEMAIL>"
  else
    MAINTAINER=$(git -C "$ROOT" log -1 --format='%an <%ae>' 2>/dev/null || true)
    [ -n "$MAINTAINER" ] || MAINTAINER="Media Edge maintainers <media-edge@example.org>"
  fi
fi

umask 022
# The staging folder is debian/media-edge of a scratch source tree, where dpkg-shlibdeps
# expects a package's files.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/src/debian/$PKG"
mkdir -p "$STAGE/DEBIAN"
chmod 0755 "$STAGE" "$STAGE/DEBIAN"

# Exits unless FILE holds exactly one line equal to LINE (the sources this script edits
# changed under it otherwise).
one_line() {
  local n
  n=$(grep -cxF -- "$2" "$1" || true)
  [ "$n" = 1 ] || die "$1: expected the line '$2' once, found it $n times; update $0"
}

# --- the binary
install -D -m 0755 "$BINARY" "$STAGE/usr/bin/$PKG"
if [ "$STRIP" = 1 ]; then
  command -v strip >/dev/null || die "strip not found (package binutils); or --no-strip"
  # What dh_strip does for executables.
  strip --remove-section=.comment --remove-section=.note "$STAGE/usr/bin/$PKG"
fi

# --- the systemd unit: the repository's, with the package's paths
UNIT_SRC="$ROOT/systemd/media-edge.service"
UNIT="$STAGE/lib/systemd/system/media-edge.service"
one_line "$UNIT_SRC" "# Dedicated system user, create once:"
grep -q '^ExecStart=/usr/local/bin/media-edge ' "$UNIT_SRC" || die "$UNIT_SRC: no ExecStart=/usr/local/bin/media-edge"
install -d -m 0755 "$(dirname "$UNIT")"
sed -e 's#/usr/local/bin/media-edge#/usr/bin/media-edge#g' \
  -e '/^# Dedicated system user, create once:$/,/^#   useradd /c\# Dedicated system user, created by the package (postinst).' \
  "$UNIT_SRC" >"$UNIT"
chmod 0644 "$UNIT"
grep -q '^ExecStart=/usr/bin/media-edge run ' "$UNIT" || die "generated unit has no ExecStart=/usr/bin/media-edge"
grep -q '^ExecReload=/usr/bin/media-edge reload ' "$UNIT" || die "generated unit has no ExecReload=/usr/bin/media-edge"
! grep -q '/usr/local/bin\|useradd' "$UNIT" || die "generated unit still names /usr/local/bin or useradd"
grep -q '^WantedBy=multi-user.target$' "$UNIT" || die "generated unit lost its [Install] section"

# --- the config: relative paths in it resolve against /etc/media-edge, so the ones that
# name shipped files become absolute; data_dir (relative to the working directory) too.
CONF_SRC="$ROOT/conf/media-edge.toml"
CONF="$STAGE/etc/media-edge/media-edge.toml"
HEAD1='# This file is also compiled into the binary: `media-edge run` without `--config` uses it,'
HEAD2='# with relative paths resolved against ./conf (so `conf/samples/` from a checkout).'
for line in "$HEAD1" "$HEAD2" 'data_dir = "./data"' 'root = "samples"'; do
  one_line "$CONF_SRC" "$line"
done
install -d -m 0755 "$STAGE/etc/media-edge"
sed -e '/^# This file is also compiled into the binary: /,/^# with relative paths resolved against \.\/conf /c\
# Installed by the media-edge Debian package as a conffile: dpkg keeps your changes on\
# upgrade. The service (systemctl status media-edge) reads it; after an edit run\
# `media-edge check-config /etc/media-edge/media-edge.toml`, then `systemctl reload media-edge`.\
# Relative paths in it resolve against /etc/media-edge (cloudflare-ips.txt is there); the\
# samples are in /usr/share/media-edge/samples.' \
  -e 's#^data_dir = "\./data"$#data_dir = "/var/lib/media-edge"#' \
  -e 's#^root = "samples"$#root = "/usr/share/media-edge/samples"#' \
  "$CONF_SRC" >"$CONF"
chmod 0644 "$CONF"
# security.trusted_proxies_file = "cloudflare-ips.txt" (commented out) names this one.
install -m 0644 "$ROOT/conf/cloudflare-ips.txt" "$STAGE/etc/media-edge/cloudflare-ips.txt"
for line in 'data_dir = "/var/lib/media-edge"' 'root = "/usr/share/media-edge/samples"' \
  '# Installed by the media-edge Debian package as a conffile: dpkg keeps your changes on'; do
  one_line "$CONF" "$line"
done
! grep -qF 'compiled into the binary' "$CONF" || die "generated config kept the checkout's header"
[ "$(wc -l <"$CONF")" -ge "$(($(wc -l <"$CONF_SRC") - 2))" ] || die "generated config lost lines"

# --- shared data
SHARE="$STAGE/usr/share/$PKG"
install -d -m 0755 "$SHARE"
cp -R "$ROOT/conf/samples" "$SHARE/samples"
find "$SHARE/samples" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
[ -n "$(ls -A "$SHARE/samples")" ] || die "conf/samples is empty"

# --- documentation
DOC="$STAGE/usr/share/doc/$PKG"
install -d -m 0755 "$DOC"
install -m 0644 "$ROOT/packaging/deb/copyright" "$DOC/copyright"
gzip -9n <"$ROOT/README.md" >"$DOC/README.md.gz"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "$PKG ($VERSION) unstable; urgency=medium"
  echo
  echo "  * Built from commit $COMMIT by scripts/package-deb.sh."
  echo
  echo " -- $MAINTAINER  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.gz"
chmod 0644 "$DOC"/*

# --- manual page, from the binary's --help (escaped for roff)
roff_text() { sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\([.']\)/\\\\\&\1/"; }
HELP=$("$BINARY" --help) || die "$BINARY --help failed (does it run on this machine?)"
COMMANDS=$(printf '%s\n' "$HELP" | awk '/^Commands:/ { f = 1; next } f && /^[^ ]/ { exit } f && NF { print $1 }' | grep -vx help || true)
[ -n "$COMMANDS" ] || die "no Commands: in $BINARY --help"
install -d -m 0755 "$STAGE/usr/share/man/man1"
{
  echo ".TH MEDIA\\-EDGE 1 \"$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)\" \"media\\-edge $VERSION\" \"User Commands\""
  echo '.SH NAME'
  echo 'media\-edge \- self\-hosted media CDN node: edge cache and media transforms'
  echo '.SH SYNOPSIS'
  echo '.B media\-edge'
  echo '.I command'
  echo '[\fIoptions\fR]'
  echo '.SH DESCRIPTION'
  echo '.nf'
  printf '%s\n' "$HELP" | roff_text
  echo '.fi'
  echo '.SH COMMANDS'
  for c in $COMMANDS; do
    echo ".SS $(printf '%s' "$c" | roff_text)"
    echo '.nf'
    "$BINARY" "$c" --help | roff_text
    echo '.fi'
  done
  echo '.SH FILES'
  echo '.TP'
  echo '.I /etc/media\-edge/media\-edge.toml'
  echo 'The configuration the service runs with.'
  echo '.TP'
  echo '.I /etc/media\-edge/env'
  echo 'Environment of the service (secrets such as MEDIA_EDGE_ADMIN_TOKEN), optional.'
  echo '.TP'
  echo '.I /var/lib/media\-edge'
  echo 'Data directory: disk cache, purge log, metadata database, sockets.'
  echo '.SH SEE ALSO'
  echo '.BR systemctl (1),'
  echo '.I /usr/share/doc/media\-edge/README.md.gz'
} | gzip -9n >"$STAGE/usr/share/man/man1/$PKG.1.gz"
chmod 0644 "$STAGE/usr/share/man/man1/$PKG.1.gz"

# --- Depends
# The libraries the binary names (DT_NEEDED); ldd also lists their own dependencies, which
# their packages already depend on.
needed_libs() {
  if command -v readelf >/dev/null; then
    readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
  else
    ldd "$1" | awk '$2 == "=>" { print $1 }'
  fi
}
shlib_depends() {
  if command -v dpkg-shlibdeps >/dev/null; then
    # A one-package debian/control makes the scratch tree a source tree for dpkg-shlibdeps.
    printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$WORK/src/debian/control"
    (cd "$WORK/src" && dpkg-shlibdeps -O "-edebian/$PKG/usr/bin/$PKG") | sed -n 's/^shlibs:Depends=//p'
    return
  fi
  # Without dpkg-dev: the package owning each library the binary names (no versions).
  local bin="$STAGE/usr/bin/$PKG" name lib real owner p pkgs=""
  for name in $(needed_libs "$bin"); do
    lib=$(ldd "$bin" | awk -v n="$name" '$1 == n && $2 == "=>" { print $3 } $1 ~ "/" n "$" { print $1 }' | head -1)
    [ -n "$lib" ] && [ -e "$lib" ] || die "ldd finds no $name (linked by the binary)"
    owner="" real=$(readlink -f "$lib")
    for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
      owner=$(dpkg -S "$p" 2>/dev/null | grep -v '^diversion' | head -1 | cut -d: -f1) || true
      [ -n "$owner" ] && break
    done
    [ -n "$owner" ] || die "$lib (linked by the binary) belongs to no installed package"
    pkgs="$pkgs $owner"
  done
  printf '%s\n' $pkgs | sort -u | paste -sd, | sed 's/,/, /g'
}
SHLIBS=$(shlib_depends)
[ -n "$SHLIBS" ] || die "could not compute the binary's library dependencies"

# --- control files
for s in postinst prerm postrm; do
  install -m 0755 "$ROOT/packaging/deb/$s" "$STAGE/DEBIAN/$s"
done
(cd "$STAGE" && find etc -type f -printf '/%p\n' | sort) >"$STAGE/DEBIAN/conffiles"
(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: adduser, $SHLIBS
Section: httpd
Priority: optional
Description: self-hosted media CDN node: edge cache and media transforms
 Media Edge is one binary, built on Cloudflare's Pingora: an HTTP edge cache
 (memory and disk tiers, cache lock, ranges, purge by tag, key or prefix,
 stale-while-revalidate and stale-if-error) in front of an in-process origin
 service that reads originals from S3/R2, remote HTTP servers or a local
 folder, and resizes, converts and transcodes images and video on the way.
 .
 The package runs it as the systemd service media-edge, as the system user
 media-edge, with /etc/media-edge/media-edge.toml; the default configuration
 listens on port 8080 and serves sample media at /samples/.
EOF
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/md5sums"

mkdir -p "$OUT"
DEB="$(cd "$OUT" && pwd)/${PKG}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$STAGE" "$DEB" >&2
echo "$DEB"
