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
  # The official Cloudflare Python SDK, for the drop-in purge API test.
  python3 -m pip install -q --disable-pip-version-check cloudflare==5.9.0 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages cloudflare==5.9.0
  if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
    cargo install s3s-fs --version 0.14.1 --features binary --locked
  fi
fi
