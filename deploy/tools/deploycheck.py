#!/usr/bin/env python3
"""Offline checks of the deployment files, run by deploy/check.sh.

    deploycheck.py compose SCHEMA.json docker-compose.yml
    deploycheck.py k8s RENDERED.yaml [--drain-timeout 30s]
    deploycheck.py metrics [--exposition SCRAPE]... [--source metrics.rs]... FILE...

`compose` validates against the Compose Specification JSON schema, then checks
what the schema cannot: bind-mounted files exist, dependencies name real
services, and the nodes Prometheus and HAProxy point at are services.

`k8s` checks the rendered manifests for mistakes that schema validation lets
through: selectors that select nothing, port names that do not exist, an env
var with both value and valueFrom, a grace period shorter than the drain, and
the custom resources (PodMonitor, PrometheusRule) that no bundled schema knows.

`metrics` checks that every `roomcast_*` series named in the given dashboards
(JSON) and rule files (YAML) is exported by the gateway: the series names of
real /metrics scrapes and/or the names described in metrics.rs files.
"""

import argparse
import json
import pathlib
import re
import sys

import yaml

FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


# --------------------------------------------------------------------------
# compose


def check_compose(schema_path, compose_path):
    import jsonschema

    compose_path = pathlib.Path(compose_path)
    root = compose_path.parent
    schema = json.loads(pathlib.Path(schema_path).read_text())
    doc = yaml.safe_load(compose_path.read_text())
    # Published copies declare draft 2019-09 with a spelling that
    # validator_for does not recognise, so pick the draft by name.
    declared = schema.get("$schema", "")
    if "2019-09" in declared:
        validator_cls = jsonschema.Draft201909Validator
    elif "draft-07" in declared:
        validator_cls = jsonschema.Draft7Validator
    else:
        validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    for e in errors:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        fail(f"{compose_path.name}: {where}: {e.message}")
    if not errors:
        ok(f"{compose_path.name} conforms to the Compose Specification schema")

    services = doc.get("services", {})
    for name, svc in services.items():
        for dep in svc.get("depends_on", []) or []:
            if dep not in services:
                fail(f"service {name} depends on unknown service {dep}")
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")):
                if not (root / src).exists():
                    fail(f"service {name} mounts {src}, which does not exist")
        build = svc.get("build")
        if isinstance(build, dict) and "dockerfile" in build:
            df = root / build.get("context", ".") / build["dockerfile"]
            if not df.exists():
                fail(f"service {name} builds from {df}, which does not exist")
    ok("compose mounts, build files and dependencies resolve")

    # The nodes named in the Prometheus and HAProxy configs must be services.
    prom = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    ]
    for t in targets:
        host = t.rsplit(":", 1)[0]
        if host != "localhost" and host not in services:
            fail(f"prometheus.yml scrapes {t}, but {host} is not a compose service")
    haproxy = (root / "deploy/haproxy/haproxy.cfg").read_text()
    for host in re.findall(r"^\s*server\s+\S+\s+([\w.-]+):\d+", haproxy, re.M):
        if host not in services:
            fail(f"haproxy.cfg forwards to {host}, which is not a compose service")
    gateways = [n for n, s in services.items() if "ROOMCAST_ADAPTER" in (s.get("environment") or {})]
    scraped = {t.rsplit(":", 1)[0] for t in targets}
    for g in gateways:
        if g not in scraped:
            fail(f"gateway service {g} is not scraped by prometheus.yml")
        if not re.search(rf"^\s*server\s+\S+\s+{re.escape(g)}:8080", haproxy, re.M):
            fail(f"gateway service {g} is not behind the load balancer")
    ok(f"prometheus and haproxy cover the {len(gateways)} gateway services")


# --------------------------------------------------------------------------
# k8s


def parse_duration(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", s.strip())
    if not m:
        raise ValueError(s)
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_k8s(rendered, default_drain):
    docs = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
    name = pathlib.Path(rendered).name
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = by_kind.get("Deployment", [])
    configmaps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
    secrets_refs = set()

    def pod_ports(dep):
        return {
            p["name"]: p["containerPort"]
            for c in dep["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }

    for dep in deployments:
        dname = dep["metadata"]["name"]
        tmpl = dep["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        if not selects(dep["spec"]["selector"], labels):
            fail(f"{name}: Deployment {dname}: selector does not match its pod labels")
        spec = tmpl["spec"]
        ports = pod_ports(dep)
        for c in spec["containers"]:
            for e in c.get("env", []):
                if "value" in e and "valueFrom" in e:
                    fail(f"{name}: {dname}/{c['name']}: env {e['name']} has both value and valueFrom")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secrets_refs.add(ref["name"])
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe)
                port = p and (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    fail(f"{name}: {dname}/{c['name']}: {probe} uses unknown port {port}")
            for m in c.get("volumeMounts", []):
                if m["name"] not in {v["name"] for v in spec.get("volumes", [])}:
                    fail(f"{name}: {dname}/{c['name']}: mounts unknown volume {m['name']}")
        for v in spec.get("volumes", []):
            cm = v.get("configMap")
            if cm and cm["name"] not in configmaps:
                fail(f"{name}: {dname}: volume {v['name']} names missing ConfigMap {cm['name']}")
        if labels.get("app.kubernetes.io/component") == "gateway":
            gw = spec["containers"][0]
            env = {e["name"]: e.get("value") for e in gw.get("env", [])}
            drain = parse_duration(env.get("ROOMCAST_DRAIN_TIMEOUT") or default_drain)
            pre = gw.get("lifecycle", {}).get("preStop", {})
            pre_sleep = 0
            if "sleep" in pre:
                pre_sleep = pre["sleep"]["seconds"]
            elif "exec" in pre and pre["exec"]["command"][:1] == ["sleep"]:
                pre_sleep = int(pre["exec"]["command"][1])
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= drain + pre_sleep:
                fail(f"{name}: {dname}: terminationGracePeriodSeconds {grace} <= preStop {pre_sleep}s + drain {drain}s")
            else:
                ok(f"{name}: {dname}: grace {grace}s > preStop {pre_sleep}s + drain {drain:g}s")
            if gw.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                fail(f"{name}: {dname}: readiness probe is not /readyz")
            if gw.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                fail(f"{name}: {dname}: liveness probe is not /healthz")
            if not spec.get("securityContext", {}).get("runAsNonRoot"):
                fail(f"{name}: {dname}: pods may run as root")
            if spec.get("enableServiceLinks", True):
                fail(f"{name}: {dname}: service links would inject ROOMCAST_* variables")

    def find_target(selector, what):
        hits = [d for d in deployments if selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))]
        if not hits:
            fail(f"{name}: {what} selects no Deployment's pods")
        return hits

    for svc in by_kind.get("Service", []):
        what = f"Service {svc['metadata']['name']}"
        for dep in find_target(svc["spec"].get("selector"), what):
            ports = pod_ports(dep)
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                if isinstance(tp, str) and tp not in ports:
                    fail(f"{name}: {what}: targetPort {tp} is not a container port")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        find_target(pdb["spec"]["selector"], f"PodDisruptionBudget {pdb['metadata']['name']}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if not any(d["metadata"]["name"] == ref["name"] for d in deployments):
            fail(f"{name}: HPA {hpa['metadata']['name']} scales missing {ref['kind']} {ref['name']}")
        if hpa["spec"].get("minReplicas", 1) < 2:
            fail(f"{name}: HPA {hpa['metadata']['name']}: fewer than 2 replicas cannot roll without an outage")
        for dep in deployments:
            if dep["metadata"]["name"] == ref["name"] and "replicas" in dep["spec"]:
                fail(f"{name}: Deployment {ref['name']} sets replicas, which fights its HPA")
    for pm in by_kind.get("PodMonitor", []):
        what = f"PodMonitor {pm['metadata']['name']}"
        if pm["apiVersion"] != "monitoring.coreos.com/v1":
            fail(f"{name}: {what}: unexpected apiVersion {pm['apiVersion']}")
        eps = pm["spec"].get("podMetricsEndpoints") or []
        if not eps:
            fail(f"{name}: {what}: no podMetricsEndpoints")
        for dep in find_target(pm["spec"]["selector"], what):
            for ep in eps:
                if ep.get("port") not in pod_ports(dep):
                    fail(f"{name}: {what}: port {ep.get('port')} is not a container port")
                if ep.get("path", "/metrics") != "/metrics":
                    fail(f"{name}: {what}: path {ep.get('path')} is not /metrics")
    for pr in by_kind.get("PrometheusRule", []):
        groups = pr["spec"].get("groups") or []
        rules = [r for g in groups for r in g.get("rules", [])]
        if not rules or any("expr" not in r or not ("alert" in r or "record" in r) for r in rules):
            fail(f"{name}: PrometheusRule {pr['metadata']['name']}: empty or malformed rules")
    for ing in by_kind.get("Ingress", []):
        services = {s["metadata"]["name"] for s in by_kind.get("Service", [])}
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]["name"]
                if svc not in services:
                    fail(f"{name}: Ingress {ing['metadata']['name']} routes to missing Service {svc}")
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    if secrets_refs:
        kinds += f"; expects Secret(s) {', '.join(sorted(secrets_refs))} to exist"
    ok(f"{name}: cross-references checked ({kinds})")


# --------------------------------------------------------------------------
# metrics

SUFFIXES = {
    "counter": ["_total", "_created"],
    "gauge": [""],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "summary": ["", "_sum", "_count", "_created"],
    "unknown": [""],
    "untyped": [""],
    "info": ["_info"],
    "stateset": [""],
    "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
}


def exported_from_exposition(text):
    """Series names a scrape can carry, from TYPE lines and samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            for s in SUFFIXES.get(kind.strip(), [""]):
                # OpenMetrics counters are declared without _total.
                names.add(name[: -len("_total")] + s if name.endswith("_total") and s == "_total" else name + s)
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def exported_from_source(text):
    """Series names from the `describe_counter!` / `describe_gauge!` /
    `describe_histogram!` calls in a metrics.rs, whose names are string
    literals or `const NAME: &str = "..."`. Counters are registered under
    their exposition names (`_total` included), so only histograms gain
    suffixes."""
    consts = dict(
        re.findall(r'const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([a-z_:][a-z0-9_:]*)"', text)
    )
    names = set()
    for kind, arg in re.findall(
        r'describe_(counter|gauge|histogram)!\(\s*("[a-z_:][a-z0-9_:]*"|[A-Z][A-Z0-9_]*)', text
    ):
        name = arg.strip('"') if arg.startswith('"') else consts.get(arg)
        if name is None:
            raise SystemExit(f"describe_{kind}!({arg}, ...): no `const {arg}: &str` in the metrics source")
        for s in ["_bucket", "_sum", "_count"] if kind == "histogram" else [""]:
            names.add(name + s)
    if not names:
        raise SystemExit("no describe_*!(...) calls found in metrics source; the parser needs updating")
    return names


STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
METRIC = re.compile(r"\broomcast_[a-zA-Z0-9_:]*")


def used_in_expr(expr):
    return set(METRIC.findall(STRING.sub('""', expr)))


def exprs_in_dashboard(doc):
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    out.append(v)
                elif k == "query" and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return out


def exprs_in_rules(doc):
    if doc.get("kind") == "PrometheusRule":
        doc = doc["spec"]
    return [r["expr"] for g in doc.get("groups", []) for r in g.get("rules", [])]


def check_metrics(exported, files, origin):
    print(f"  {len(exported)} series names exported ({origin})")
    for f in files:
        p = pathlib.Path(f)
        if p.suffix == ".json":
            exprs = exprs_in_dashboard(json.loads(p.read_text()))
        else:
            exprs = exprs_in_rules(yaml.safe_load(p.read_text()))
        used = set().union(*map(used_in_expr, exprs)) if exprs else set()
        missing = sorted(used - exported)
        if missing:
            fail(f"{p.name}: names metrics the gateway does not export: {', '.join(missing)}")
        else:
            ok(f"{p.name}: all {len(used)} roomcast metrics it uses are exported")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compose")
    c.add_argument("schema")
    c.add_argument("file")
    k = sub.add_parser("k8s")
    k.add_argument("rendered")
    k.add_argument("--drain-timeout", default="30s")
    m = sub.add_parser("metrics")
    m.add_argument("--exposition", action="append", default=[], help="a /metrics scrape (repeatable)")
    m.add_argument("--source", action="append", default=[], help="a metrics.rs to parse (repeatable)")
    m.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.cmd == "compose":
        check_compose(a.schema, a.file)
    elif a.cmd == "k8s":
        check_k8s(a.rendered, a.drain_timeout)
    else:
        if not a.exposition and not a.source:
            ap.error("metrics needs --exposition or --source")
        exported, origins = set(), []
        for f in a.exposition:
            exported |= exported_from_exposition(pathlib.Path(f).read_text())
            origins.append("a /metrics scrape")
        for f in a.source:
            exported |= exported_from_source(pathlib.Path(f).read_text())
            origins.append(f"parsed {f}")
        check_metrics(exported, a.files, "; ".join(origins))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
