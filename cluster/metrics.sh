#!/usr/bin/env bash
# Prometheus and Grafana on the Ray head node, for the Ray dashboard's Metrics view (Esper's
# ray_esper_* metrics and Ray's own). cluster/gpu.yaml and cluster/local.yaml call it; every step is
# idempotent, so rerunning `ray up` neither downloads nor starts anything twice.
#
#   bash cluster/metrics.sh install   # download Grafana once into ~/grafana
#   bash cluster/metrics.sh start     # start Prometheus (ray metrics launch-prometheus) and Grafana unless running
#   bash cluster/metrics.sh stop
#
# Run it after `ray start --head`: both read the configs Ray writes under the session directory
# (Prometheus discovers every node's metrics port through /tmp/ray/prom_metrics_service_discovery.json).
# The dashboard looks for them at RAY_PROMETHEUS_HOST (default http://localhost:9090) and RAY_GRAFANA_HOST
# (default http://localhost:3000); your browser loads the Grafana panels from localhost:3000 too, so forward
# that port as well as 8265 (docs/operations.md, "Dashboard").
set -euo pipefail

GRAFANA_VERSION="${GRAFANA_VERSION:-11.2.0}"
GRAFANA_DIR="${GRAFANA_DIR:-$HOME/grafana}"
PROMETHEUS_DIR="${PROMETHEUS_DIR:-$HOME/prometheus}"
RAY_SESSION="${RAY_SESSION:-/tmp/ray/session_latest}"

install_grafana() {
    [ -x "$GRAFANA_DIR/bin/grafana" ] && return 0
    local arch
    arch=$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
    mkdir -p "$GRAFANA_DIR"
    wget -q -O - "https://dl.grafana.com/oss/release/grafana-${GRAFANA_VERSION}.linux-${arch}.tar.gz" \
        | tar -xz --strip-components=1 -C "$GRAFANA_DIR"
}

start() {
    # pgrep -x matches the process name exactly (a pattern match would find this script's own shell).
    if ! pgrep -x prometheus >/dev/null; then
        mkdir -p "$PROMETHEUS_DIR"
        (cd "$PROMETHEUS_DIR" && nohup ray metrics launch-prometheus >launch.log 2>&1 &)
    fi
    if ! { [ -f "$GRAFANA_DIR/grafana.pid" ] && kill -0 "$(cat "$GRAFANA_DIR/grafana.pid")" 2>/dev/null; }; then
        install_grafana
        nohup "$GRAFANA_DIR/bin/grafana" server --homepath "$GRAFANA_DIR" \
            --config "$RAY_SESSION/metrics/grafana/grafana.ini" web >"$GRAFANA_DIR/grafana.log" 2>&1 &
        echo $! >"$GRAFANA_DIR/grafana.pid"
    fi
    echo "Prometheus: http://localhost:9090  Grafana: http://localhost:3000 (logs in $PROMETHEUS_DIR, $GRAFANA_DIR)"
}

stop() {
    ray metrics shutdown-prometheus || true
    if [ -f "$GRAFANA_DIR/grafana.pid" ]; then
        kill "$(cat "$GRAFANA_DIR/grafana.pid")" 2>/dev/null || true
        rm -f "$GRAFANA_DIR/grafana.pid"
    fi
}

case "${1:-start}" in
    install) install_grafana ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
