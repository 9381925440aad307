#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/roomcast.json, the Roomcast dashboard.

The JSON is generated so that panels stay uniform (units, legends, layout)
and every query is readable here in one place. Edit this file, then run

    python3 deploy/grafana/dashboard.py

deploy/check.sh fails when the JSON is out of date, and when a query names a
metric that the gateway does not export.
"""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent / "dashboards" / "roomcast.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels = []

    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        if self.x:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1

    def stat(self, title, expr, unit="short", w=4, h=4, description="", thresholds=None):
        steps = thresholds or [{"color": "green", "value": None}]
        self.panels.append(
            {
                "type": "stat",
                "id": self._id(),
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": self._place(w, h),
                "targets": [{"refId": "A", "datasource": DS, "expr": expr, "instant": True}],
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "color": {"mode": "thresholds"},
                    },
                    "overrides": [],
                },
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "area",
                    "textMode": "auto",
                },
            }
        )

    def series(self, title, targets, unit="short", w=12, h=8, description="", stack=False, min0=True):
        defaults = {
            "unit": unit,
            "custom": {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            },
        }
        if min0:
            defaults["min"] = 0
        self.panels.append(
            {
                "type": "timeseries",
                "id": self._id(),
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": self._place(w, h),
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": legend}
                    for i, (e, legend) in enumerate(targets)
                ],
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
            }
        )

    def heatmap(self, title, expr, w=12, h=8, description=""):
        self.panels.append(
            {
                "type": "heatmap",
                "id": self._id(),
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": self._place(w, h),
                "targets": [
                    {"refId": "A", "datasource": DS, "expr": expr, "format": "heatmap", "legendFormat": "{{le}}"}
                ],
                "options": {
                    "calculate": False,
                    "yAxis": {"unit": "s"},
                    "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                },
            }
        )


def build():
    p = Layout()
    red_at_zero = [{"color": "red", "value": None}, {"color": "green", "value": 1}]

    p.row("Overview")
    p.stat("Connections", f"sum(roomcast_connections{{{SEL}}})", description="Open WebSocket connections, all selected nodes.")
    p.stat("Subscriptions", f"sum(roomcast_subscriptions{{{SEL}}})")
    p.stat("Rooms (node-local, summed)", f"sum(roomcast_rooms{{{SEL}}})",
           description="A room with subscribers on several nodes counts once per node.")
    p.stat("Deliveries/s", f"sum(rate(roomcast_messages_sent_total{{{SEL}}}[$__rate_interval]))", unit="ops")
    p.stat("Nodes up", f'sum(up{{job="roomcast", {SEL}}})', thresholds=red_at_zero,
           description="Nodes Prometheus can scrape.")
    p.stat("Nodes ready", f"sum(roomcast_ready{{{SEL}}})", thresholds=red_at_zero,
           description="Nodes whose /readyz answers 200: adapter (Redis) up and not draining.")

    p.row("Clients")
    p.series("Connections by node", [(f"roomcast_connections{{{SEL}}}", "{{instance}}")], stack=True)
    p.series("Connections accepted / s", [
        (f"sum by (instance) (rate(roomcast_connections_accepted_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], unit="ops")
    p.series("Sessions by protocol and transport", [
        (f"sum by (protocol, transport) (roomcast_sessions{{{SEL}}})", "{{protocol}} {{transport}}"),
    ], stack=True, description="roomcast.v1 (JSON, protobuf), raw echo, and socket.io on WebSocket or long-polling.")
    p.series("Disconnects / s by reason", [
        (f"sum by (reason) (rate(roomcast_disconnects_total{{{SEL}}}[$__rate_interval]))", "{{reason}}"),
    ], unit="ops", stack=True)
    p.series("Subscriptions and rooms by node", [
        (f"roomcast_subscriptions{{{SEL}}}", "subscriptions {{instance}}"),
        (f"roomcast_rooms{{{SEL}}}", "rooms {{instance}}"),
    ])

    p.row("Throughput")
    p.series("Deliveries / s (frames written to clients)", [
        (f"sum by (instance) (rate(roomcast_messages_sent_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], unit="ops", stack=True)
    p.series("Frames received from clients / s", [
        (f"sum by (instance) (rate(roomcast_messages_received_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], unit="ops", stack=True)
    p.series("Publications accepted / s by source", [
        (f"sum by (source) (rate(roomcast_publications_total{{{SEL}}}[$__rate_interval]))", "{{source}}"),
    ], unit="ops", stack=True)
    p.series("Fan-out (deliveries per publication)", [
        (f"sum(rate(roomcast_messages_sent_total{{{SEL}}}[$__rate_interval]))"
         f" / clamp_min(sum(rate(roomcast_publications_total{{{SEL}}}[$__rate_interval])), 1e-9)", "fan-out"),
    ], description="Cluster-wide. Includes replies and other frames, so it is an upper bound.")

    p.row("Delivery latency")
    bucket = f"sum by (le) (rate(roomcast_delivery_seconds_bucket{{{SEL}}}[$__rate_interval]))"
    p.series("Delivery latency percentiles", [
        (f"histogram_quantile(0.50, {bucket})", "p50"),
        (f"histogram_quantile(0.90, {bucket})", "p90"),
        (f"histogram_quantile(0.99, {bucket})", "p99"),
        (f"histogram_quantile(0.999, {bucket})", "p99.9"),
    ], unit="s", description="From accepting a publication to writing it to a client (roomcast_delivery_seconds).")
    p.series("p99 delivery latency by node", [
        (f"histogram_quantile(0.99, sum by (instance, le) (rate(roomcast_delivery_seconds_bucket{{{SEL}}}[$__rate_interval])))",
         "{{instance}}"),
    ], unit="s")
    p.heatmap("Delivery latency distribution", bucket)
    p.series("Mean delivery latency", [
        (f"sum(rate(roomcast_delivery_seconds_sum{{{SEL}}}[$__rate_interval]))"
         f" / clamp_min(sum(rate(roomcast_delivery_seconds_count{{{SEL}}}[$__rate_interval])), 1e-9)", "mean"),
    ], unit="s")

    p.row("Health")
    p.series("Ping timeouts / s (close 4009)", [
        (f"sum by (instance) (rate(roomcast_ping_timeouts_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], unit="ops", w=8)
    p.series("Slow-consumer closes / s (close 4008)", [
        (f'sum by (instance) (rate(roomcast_disconnects_total{{reason="slow_consumer", {SEL}}}[$__rate_interval]))',
         "{{instance}}"),
    ], unit="ops", w=8)
    p.series("Adapter up and ready by node", [
        (f"roomcast_adapter_up{{{SEL}}}", "adapter {{instance}}"),
        (f"roomcast_ready{{{SEL}}}", "ready {{instance}}"),
    ], w=8, description="adapter: the Redis connection is healthy. ready: /readyz answers 200 (adapter up, not draining).")
    p.series("Slow-consumer drops / s by policy", [
        (f"sum by (policy) (rate(roomcast_slow_consumer_drops_total{{{SEL}}}[$__rate_interval]))", "{{policy}}"),
    ], unit="ops", description="Queued publications dropped (not closed) under the drop_oldest and latest_per_key policies.")
    p.series("Upgrades refused / s by reason", [
        (f"sum by (reason) (rate(roomcast_connections_rejected_total{{{SEL}}}[$__rate_interval]))", "{{reason}}"),
    ], unit="ops", description="Connection limit, connection rate, bad Origin, unknown subprotocol, ...")
    p.series("Command errors / s by code", [
        (f"sum by (code) (rate(roomcast_command_errors_total{{{SEL}}}[$__rate_interval]))", "{{code}}"),
    ], unit="ops", description="error replies to client commands (bad_request, forbidden, too_many_requests, ...)")

    p.row("Adapter (Redis)")
    p.series("Adapter publish latency", [
        (f"histogram_quantile(0.50, sum by (le) (rate(roomcast_adapter_publish_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(roomcast_adapter_publish_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p99"),
    ], unit="s", w=6, description="One publish round trip to Redis.")
    p.series("Pub/sub lag between nodes", [
        (f"histogram_quantile(0.50, sum by (le) (rate(roomcast_adapter_pubsub_lag_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(roomcast_adapter_pubsub_lag_seconds_bucket{{{SEL}}}[$__rate_interval])))", "p99"),
    ], unit="s", w=6, description="From a publication's acceptance to its arrival on another node through Redis.")
    p.series("Adapter reconnects", [
        (f"sum by (instance) (increase(roomcast_adapter_reconnects_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], w=6)
    p.series("Adapter messages dropped / s", [
        (f"sum by (instance) (rate(roomcast_adapter_messages_dropped_total{{{SEL}}}[$__rate_interval]))", "{{instance}}"),
    ], unit="ops", w=6, description="Received from Redis and thrown away: undecodable, for rooms no longer subscribed, or queues full.")

    p.row("gRPC control plane")
    p.series("gRPC requests / s by method", [
        (f"sum by (method) (rate(roomcast_grpc_requests_total{{{SEL}}}[$__rate_interval]))", "{{method}}"),
    ], unit="reqps", stack=True)
    p.series("gRPC errors / s by method and code", [
        (f'sum by (method, code) (rate(roomcast_grpc_requests_total{{code!="OK", {SEL}}}[$__rate_interval]))',
         "{{method}} {{code}}"),
    ], unit="reqps", stack=True)

    return {
        "uid": "roomcast-overview",
        "title": "Roomcast",
        "description": "Roomcast gateway cluster: clients, throughput, delivery latency, adapter and control plane.",
        "tags": ["roomcast", "websocket"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "roomcast-prometheus"},
                    "hide": 0,
                    "refresh": 1,
                },
                {
                    "name": "instance",
                    "label": "Node",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(roomcast_connections, instance)", "refId": "instance"},
                    "definition": "label_values(roomcast_connections, instance)",
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": p.panels,
    }


def render():
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != render():
            print(f"{OUT.name} is out of date: run python3 deploy/grafana/dashboard.py", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
