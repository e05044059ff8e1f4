#!/usr/bin/env python3
"""Offline checks of deploy/ (no cluster is needed):

1. `kubectl kustomize` renders every overlay; a YAML parser then checks each object's kind, apiVersion,
   required fields, container images (name:tag, no :latest), resource requests (cpu and memory; GPU
   workers request and limit nvidia.com/gpu), and that every Service selects the pods of some
   workload in the same render.
2. Every metric named in the Grafana dashboard's queries and in the PrometheusRule expressions is one
   the servers export, as declared in common/metric_names.h.

Exits 77 (ctest SKIP) with a message when kubectl or python3-yaml is missing.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SKIP = 77
errors = []


def fail(message):
    errors.append(message)


try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(SKIP)


def exported_metric_names():
    """Series names from common/metric_names.h; a histogram adds _bucket, _sum and _count."""
    text = (ROOT / "common" / "metric_names.h").read_text()
    names = set()
    for name, kind in re.findall(r'MetricSpec k\w+\{"(\w+)", MetricType::k(\w+)', text):
        names.add(name)
        if kind == "Histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    if len(names) < 10:
        fail(f"found only {len(names)} metric declarations in common/metric_names.h")
    return names


# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "time", "vector", "scalar", "abs", "clamp_min", "clamp_max", "absent",
    "label_values", "label_replace", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "changes", "resets", "timestamp", "humanizeDuration", "le", "inf", "nan",
}


def metric_names_in(expr):
    """Identifiers in a PromQL expression that name series: drop strings, label matchers, grouping
    clauses, range/offset durations, and function names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)       # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)                 # range selectors
    expr = re.sub(r"\$\w+", "", expr)                      # dashboard variables
    expr = re.sub(r"label_values\(\s*([^,)]*),[^)]*\)", r"\1", expr)  # Grafana: label_values(metric, label)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        rest = expr[match.end():].lstrip()
        if word in PROMQL_WORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        found.add(word)
    return found


def check_queries(exported):
    checked = 0
    dashboard = json.loads((DEPLOY / "grafana" / "ptq-dashboard.json").read_text())
    exprs = []
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str) and value != "prometheus":
                    exprs.append(("dashboard", value))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(dashboard)
    for doc in yaml.safe_load_all((DEPLOY / "base" / "monitoring.yaml").read_text()):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    exprs.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    for where, expr in exprs:
        names = metric_names_in(expr)
        if not names:
            fail(f"{where}: query names no metric: {expr}")
        for name in names:
            checked += 1
            if name not in exported:
                fail(f"{where}: '{name}' is not a metric the servers export (common/metric_names.h): {expr}")
    return len(exprs), checked


REQUIRED = {
    ("v1", "Namespace"): ["metadata.name"],
    ("v1", "Service"): ["metadata.name", "spec.selector", "spec.ports"],
    ("v1", "PersistentVolumeClaim"): ["metadata.name", "spec.accessModes", "spec.resources.requests.storage"],
    ("apps/v1", "Deployment"): ["metadata.name", "spec.selector.matchLabels", "spec.template.metadata.labels",
                                "spec.template.spec.containers"],
    ("apps/v1", "StatefulSet"): ["metadata.name", "spec.serviceName", "spec.selector.matchLabels",
                                 "spec.template.metadata.labels", "spec.template.spec.containers"],
    ("batch/v1", "Job"): ["metadata.name", "spec.template.spec.containers", "spec.template.spec.restartPolicy"],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["metadata.name", "spec.selector.matchLabels", "spec.endpoints"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["metadata.name", "spec.groups"],
}


def get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def check_overlay(overlay, kubectl):
    render = subprocess.run([kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
                            capture_output=True, text=True)
    if render.returncode != 0:
        fail(f"{overlay}: kubectl kustomize failed: {render.stderr.strip()}")
        return
    objects = [o for o in yaml.safe_load_all(render.stdout) if o]
    kinds = {}
    pod_templates = []  # (workload name, labels, pod spec)
    for obj in objects:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = get(obj, "metadata.name")
        where = f"{overlay}: {kind}/{name}"
        kinds[kind] = kinds.get(kind, 0) + 1
        if (api, kind) not in REQUIRED:
            fail(f"{where}: unexpected apiVersion/kind {api}/{kind}")
            continue
        for field in REQUIRED[(api, kind)]:
            if get(obj, field) in (None, {}, []):
                fail(f"{where}: missing {field}")
        if kind != "Namespace" and get(obj, "metadata.namespace") != "ptq":
            fail(f"{where}: not in namespace ptq")
        if kind in ("Deployment", "StatefulSet", "Job"):
            labels = get(obj, "spec.template.metadata.labels") or {}
            selector = get(obj, "spec.selector.matchLabels")
            if selector and any(labels.get(k) != v for k, v in selector.items()):
                fail(f"{where}: selector {selector} does not match its pod labels {labels}")
            spec = get(obj, "spec.template.spec")
            pod_templates.append((name, labels, spec))
            for container in spec.get("containers", []):
                cwhere = f"{where} container {container.get('name')}"
                image = container.get("image", "")
                if not re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", image) or image.endswith(":latest"):
                    fail(f"{cwhere}: image '{image}' is not name:tag with a pinned tag")
                requests = get(container, "resources.requests") or {}
                for resource in ("cpu", "memory"):
                    if resource not in requests:
                        fail(f"{cwhere}: no {resource} request")
                if get(container, "resources.limits.memory") is None:
                    fail(f"{cwhere}: no memory limit")
                if kind == "StatefulSet" and name == "ptq-worker":
                    gpu_request = requests.get("nvidia.com/gpu")
                    gpu_limit = (get(container, "resources.limits") or {}).get("nvidia.com/gpu")
                    args = container.get("args", [])
                    device = args[args.index("--device") + 1] if "--device" in args else "cpu"
                    if overlay == "gpu":
                        if not gpu_request or gpu_request != gpu_limit:
                            fail(f"{cwhere}: GPU worker must request and limit nvidia.com/gpu equally")
                        if not device.startswith("cuda"):
                            fail(f"{cwhere}: GPU worker runs with --device {device}")
                    elif gpu_request or gpu_limit or device != "cpu":
                        fail(f"{cwhere}: CPU overlay worker asks for a GPU")
                    if "--coordinator" not in args or "ptq-coordinator." not in args[args.index("--coordinator") + 1]:
                        fail(f"{cwhere}: worker does not find the coordinator by DNS")
        if kind == "StatefulSet":
            service = get(obj, "spec.serviceName")
            headless = [o for o in objects if o.get("kind") == "Service" and get(o, "metadata.name") == service]
            if not headless or get(headless[0], "spec.clusterIP") != "None":
                fail(f"{where}: serviceName {service} is not a headless Service in the render")
    for obj in objects:
        if obj.get("kind") not in ("Service", "ServiceMonitor"):
            continue
        selector = get(obj, "spec.selector") if obj["kind"] == "Service" else get(obj, "spec.selector.matchLabels")
        matches = [n for n, labels, _ in pod_templates
                   if selector and all(labels.get(k) == v for k, v in selector.items())]
        if not matches:
            fail(f"{overlay}: {obj['kind']}/{get(obj, 'metadata.name')} selector {selector} matches no pod template")
        if obj["kind"] == "Service":
            for port in get(obj, "spec.ports") or []:
                target = port.get("targetPort", port.get("port"))
                for n, labels, spec in pod_templates:
                    if n in matches and isinstance(target, str):
                        names = [p.get("name") for c in spec["containers"] for p in c.get("ports", [])]
                        if target not in names:
                            fail(f"{overlay}: Service/{get(obj, 'metadata.name')} targetPort {target} not a port of {n}")
    # The coordinator waits for --workers idle workers before a job's first attempt: the worker
    # StatefulSet must run that many, and each worker must give peers its pod IP (--host).
    coordinator = [o for o in objects if o.get("kind") == "Deployment" and get(o, "metadata.name") == "ptq-coordinator"]
    workers = [o for o in objects if o.get("kind") == "StatefulSet" and get(o, "metadata.name") == "ptq-worker"]
    if coordinator and workers:
        cargs = get(coordinator[0], "spec.template.spec.containers")[0].get("args", [])
        group = int(cargs[cargs.index("--workers") + 1]) if "--workers" in cargs else 0
        if group != get(workers[0], "spec.replicas"):
            fail(f"{overlay}: coordinator --workers {group} but {get(workers[0], 'spec.replicas')} worker replicas")
        if not ({"--tls-cert", "--tls-key"} <= set(cargs)):
            fail(f"{overlay}: the coordinator serves without TLS (--tls-cert/--tls-key)")
        wcontainer = get(workers[0], "spec.template.spec.containers")[0]
        wargs = wcontainer.get("args", [])
        pod_ip = [e for e in wcontainer.get("env", []) if e.get("name") == "POD_IP"
                  and get(e, "valueFrom.fieldRef.fieldPath") == "status.podIP"]
        if "--host" not in wargs or wargs[wargs.index("--host") + 1] != "$(POD_IP)" or not pod_ip:
            fail(f"{overlay}: workers must pass --host $(POD_IP) from the downward API")
    for kind in ("Deployment", "StatefulSet", "Job", "Service", "PersistentVolumeClaim", "ServiceMonitor", "PrometheusRule"):
        if kind not in kinds:
            fail(f"{overlay}: render has no {kind}")
    print(f"{overlay}: {len(objects)} objects checked ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")


def main():
    exported = exported_metric_names()
    n_exprs, n_names = check_queries(exported)
    print(f"queries: {n_exprs} expressions, {n_names} metric references checked against "
          f"{len(exported)} exported series names")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        for e in errors:
            print("FAIL:", e)
        print("SKIP: kubectl not found (apt-get install kubernetes-client); manifests not rendered")
        return 1 if errors else SKIP
    for overlay in sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()):
        check_overlay(overlay, kubectl)
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
