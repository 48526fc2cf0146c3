#!/usr/bin/env bash
# Installs what Media Edge needs on Debian 12 (run as root): the C toolchain for the TLS
# and codec crates, FFmpeg's libraries and CLI, and the S3-compatible test server.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  ca-certificates build-essential clang libclang-dev pkg-config cmake nasm \
  ffmpeg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
  libavfilter-dev libavdevice-dev libheif-dev >/dev/null
if [ "${1:-}" = "--with-test-tools" ]; then
  # PostgreSQL server binaries (initdb, postgres) for the metadata-store tests, which start a
  # throwaway cluster as an unprivileged user; the service itself is not started.
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # The Debian package test (tests/deb.rs): dpkg-shlibdeps and strip to build it, adduser
  # (its Depends) to install it, systemd-analyze to verify the unit (systemd need not run).
  $SUDO apt-get install -y -qq --no-install-recommends dpkg-dev binutils adduser systemd >/dev/null
  # The dashboard's browser test (tests/admin_config.rs): Debian's Chromium, driven by
  # Playwright (tests/browser, versions pinned by its package-lock.json) on Node.js.
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  (cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund --silent)
  # The official Cloudflare Python SDK, for the drop-in purge API test.
  python3 -m pip install -q --disable-pip-version-check cloudflare==5.9.0 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages cloudflare==5.9.0
  if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    cargo install s3s-fs --version 0.14.1 --features binary --locked
  fi
fi
