#!/usr/bin/env bash
# Installs the Debian packages Chimera builds against (BLAS, PNG, JPEG, WebP), if they are missing.
set -euo pipefail
packages=(libopenblas-dev libpng-dev libjpeg62-turbo-dev libwebp-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
