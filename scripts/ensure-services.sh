#!/usr/bin/env bash
# Installs the Debian packages the tests use and starts the services they talk to.
# Idempotent and quiet when everything is already there; safe under CI=true.
set -euo pipefail

need_apt=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "ensure-services: installing ${need_apt[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's package may start a system Prometheus on :9090 where an init system runs; the
# tests start their own on free ports and must not depend on (or collide with) it.
