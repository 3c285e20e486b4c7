#!/usr/bin/env bash
# Makes sure a Redis server answers on 127.0.0.1:6379 (or OUTBOX_CI_REDIS_PORT)
# for the outbox-redis tests: installs Debian's redis-server when it is missing,
# and starts it, keeping nothing on disk, when it does not answer. Idempotent.
# The tests' private servers also need the `redis-server` binary it installs.
set -euo pipefail

port="${OUTBOX_CI_REDIS_PORT:-6379}"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" ping | grep -q PONG
fi
