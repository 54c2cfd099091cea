#!/usr/bin/env bash
# Usage: scripts/install-deps.sh
#   Installs the Debian 12 packages needed to build and test seigo, but only the missing ones
#   (apt-get update + apt-get install --no-install-recommends). Prints one line when all are present.
#   Runs apt-get via sudo when not root.
set -euo pipefail

PKGS=(build-essential cmake pkg-config libmariadb-dev mariadb-server mariadb-client libgtest-dev
      libcli11-dev nlohmann-json3-dev spin valgrind procps iproute2 python3 gdb tzdata
      libfaketime redis-server redis-tools libhiredis-dev rabbitmq-server librabbitmq-dev
      python3-pika libcpp-httplib-dev prometheus-cpp-dev libtomlplusplus-dev chromium
      curl)

missing=()
for p in "${PKGS[@]}"; do
  # `dpkg -s` alone also succeeds for removed packages whose config files remain: check the status.
  status=$(dpkg -s "$p" 2>/dev/null | sed -n 's/^Status: //p' || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages already installed"
  exit 0
fi

SUDO=()
((EUID == 0)) || SUDO=(sudo)
echo "install-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
