#!/usr/bin/env python3
"""Wraps deploy/prometheus/rules/roomcast.yml into the PrometheusRule of the
production overlay, so both carry the same rules.

    python3 deploy/tools/prometheusrule.py          # rewrite the overlay file
    python3 deploy/tools/prometheusrule.py --check  # fail if it is stale
"""

import pathlib
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus" / "rules" / "roomcast.yml"
OUT = DEPLOY / "k8s" / "overlays" / "production" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/rules/roomcast.yml by
# deploy/tools/prometheusrule.py: edit the rules there, then rerun it.
# Needs the Prometheus Operator's CRDs.
"""


def render():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "roomcast",
            "labels": {"app.kubernetes.io/name": "roomcast", "app.kubernetes.io/component": "gateway"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.name} is stale: run python3 deploy/tools/prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
