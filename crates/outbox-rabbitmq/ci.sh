#!/usr/bin/env bash
# RabbitMQ on 127.0.0.1:5672 (guest/guest, vhost /) for the outbox-rabbitmq tests.
# Idempotent: installs Debian's rabbitmq-server when missing and starts the
# broker when nothing answers on 5672. The tests also need `rabbitmqctl`, which
# the same package provides, to cut connections off from the broker's side.
set -euo pipefail

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "==> installing rabbitmq-server"
  apt-get update -qq
  # The package tries to start the service itself; without an init system that
  # attempt fails harmlessly and the broker is started below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server || true
  command -v rabbitmq-server >/dev/null 2>&1 \
    || { echo "rabbitmq-server did not install" >&2; exit 1; }
fi

if ! rabbit_up; then
  echo "==> starting rabbitmq-server"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  rabbit_up || { echo "rabbitmq-server did not start" >&2; exit 1; }
fi
rabbitmqctl -q await_startup --timeout 60
