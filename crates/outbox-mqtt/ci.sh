#!/usr/bin/env bash
# Mosquitto for the outbox-mqtt tests: installs it if missing and starts it on
# 127.0.0.1:1883 if nothing answers there. Idempotent. The tests also start
# private brokers from the same binary (/usr/sbin/mosquitto).
set -euo pipefail

mqtt_up() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

if [ ! -x /usr/sbin/mosquitto ]; then
  echo "==> installing mosquitto"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
fi

if ! mqtt_up; then
  echo "==> starting mosquitto"
  # Debian's configuration writes its pid and log under these; /run is empty
  # after a reboot. Without a `listener` line Mosquitto 2 listens on localhost
  # only and lets anonymous clients in, which is what the tests need.
  install -d -o mosquitto -g mosquitto /run/mosquitto /var/log/mosquitto /var/lib/mosquitto \
    2>/dev/null || mkdir -p /run/mosquitto /var/log/mosquitto /var/lib/mosquitto
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  for _ in $(seq 1 30); do mqtt_up && break; sleep 1; done
  mqtt_up || { echo "mosquitto did not start" >&2; exit 1; }
fi
