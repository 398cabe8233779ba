#!/usr/bin/env bash
# Installs the Debian packages the tests use and starts the services they talk to.
# Idempotent and quiet when everything is already there; safe under CI=true.
set -euo pipefail

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need_apt=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the dashboard's browser test
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)  # the gateway benchmark's load generator
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)  # the real terminal tinyllm top's tests drive

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "ensure-services: installing ${need_apt[*]} from Debian" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's packages may start system services where an init system runs; the tests start
# their own Prometheus and InfluxDB on free ports and depend on neither.

# PostgreSQL at 127.0.0.1:5432 with trust auth for local connections (the tests create
# and drop their own databases).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "ensure-services: starting PostgreSQL" >&2
    version=$(ls /etc/postgresql | sort -n | tail -1)
    if [ -z "$version" ] || ! pg_lsclusters 2>/dev/null | grep -q main; then
        version=$(ls /usr/lib/postgresql | sort -n | tail -1)
        $SUDO pg_createcluster "$version" main >/dev/null
    fi
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q "tinyllm-tests" "$hba"; then
        printf '# tinyllm-tests: trust local loopback connections\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n' \
            | $SUDO sh -c "cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
    fi
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

# Redis at 127.0.0.1:6379, nothing kept on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "ensure-services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
