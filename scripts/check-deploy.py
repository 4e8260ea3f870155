"""Renders the Helm chart with each set of values below and checks what comes out.

Run by scripts/check-deploy.sh (which installs the pinned tools): python check-deploy.py CHART.

For each set of values: helm lint finds no warning or error; the chart renders with Helm's own
engine (helm-python-sdk); every manifest is valid for Kubernetes $KUBERNETES_VERSION (strict
schemas, kubernetes-validate) and the ServiceMonitor for the Prometheus Operator's CRD schema;
and the manifests fit together: the expected kinds and no others, selectors that select the pod,
ports that exist, the TOML configuration readable, the database and key Secrets wired in.
Exits non-zero with every problem found.
"""

import json
import os
import subprocess
import sys
import tomllib

import helm_python
import kubernetes_validate
import yaml

KUBERNETES_VERSION = os.environ["KUBERNETES_VERSION"]

# name: (values, the kinds the chart must render with them)
CASES = {
    "default values (embedded store in a volume)": (
        {},
        {"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"},
    ),
    "PostGIS, JWT key, ServiceMonitor, two replicas": (
        {
            "replicaCount": 2,
            "database": {"existingSecret": "twinlink-db"},
            "jwt": {"existingSecret": "twinlink-jwt"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "outbound": {"allow": ["10.20.0.0/16"]},
            "env": {"TWINLINK_LOG": "info,twinlink::audit=info"},
        },
        {"ConfigMap", "Deployment", "Service", "ServiceMonitor"},
    ),
}

# Validates the ServiceMonitors given as a JSON list on stdin with the Prometheus Operator's
# schema; run by node in the npm prefix, so that the import resolves there.
SERVICE_MONITOR_CHECK = """
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const doc of JSON.parse(input)) {
  try { new ServiceMonitor(doc).validate(); }
  catch (e) { failed = true; console.log(`ServiceMonitor ${doc.metadata.name}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
"""


def check_case(chart_dir, values, kinds):
    """The problems of the chart rendered with `values` (an empty list when there are none)."""
    problems = []
    lint = helm_python.lint(chart_dir, values, strict=True, kube_version=KUBERNETES_VERSION)
    # helm's severities: 1 info, 2 warning, 3 error.
    problems += [f"helm lint: {m['path']}: {m['error']}" for m in lint["messages"] if m["severity"] >= 2]
    problems += [f"helm lint: {e}" for e in lint["errors"]]

    rendered = helm_python.Chart.load(chart_dir).render(
        values, name="twin", namespace="twinlink", is_install=True
    )
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    if set(by_kind) != kinds:
        problems.append(f"rendered kinds {sorted(by_kind)}, expected {sorted(kinds)}")

    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{doc['kind']}: no schema in Kubernetes {KUBERNETES_VERSION}")
    monitors = by_kind.get("ServiceMonitor", [])
    if monitors:
        node = subprocess.run(
            ["node", "--input-type=module", "-e", SERVICE_MONITOR_CHECK],
            input=json.dumps(monitors),
            capture_output=True,
            text=True,
            cwd=os.environ["TWINLINK_DEPLOY_NODE_MODULES"],
        )
        if node.returncode != 0:
            problems.append(node.stdout + node.stderr)

    problems += coherence(by_kind, values)
    return problems


def coherence(by_kind, values):
    """What schemas cannot see: the manifests refer to each other and to the values correctly."""
    problems = []
    (deployment,) = by_kind["Deployment"]
    (service,) = by_kind["Service"]
    (config_map,) = by_kind["ConfigMap"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]

    def selects(selector, what):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{what} {selector} does not select the pod {labels}")

    selects(deployment["spec"]["selector"]["matchLabels"], "Deployment selector")
    selects(service["spec"]["selector"], "Service selector")
    (container,) = pod["spec"]["containers"]
    container_ports = {p["name"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        if port["targetPort"] not in container_ports:
            problems.append(f"Service targetPort {port['targetPort']} is no container port")
    for probe in ("livenessProbe", "readinessProbe"):
        if container[probe]["httpGet"]["port"] not in container_ports:
            problems.append(f"{probe} port is no container port")
    for monitor in by_kind.get("ServiceMonitor", []):
        svc_labels = service["metadata"]["labels"]
        if any(svc_labels.get(k) != v for k, v in monitor["spec"]["selector"]["matchLabels"].items()):
            problems.append("the ServiceMonitor does not select the Service")
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        problems += [
            f"ServiceMonitor port {e['port']} is no Service port"
            for e in monitor["spec"]["endpoints"]
            if e["port"] not in service_ports
        ]
    try:
        tomllib.loads(config_map["data"]["twinlink.toml"])
    except tomllib.TOMLDecodeError as e:
        problems.append(f"ConfigMap twinlink.toml: {e}")

    env = {e["name"]: e for e in container["env"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    database = values.get("database", {}).get("existingSecret")
    if database:
        ref = env.get("TWINLINK_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") != database:
            problems.append("TWINLINK_DATABASE_URL does not come from the database Secret")
        if "persistentVolumeClaim" in volumes["data"]:
            problems.append("a claim for the embedded store although the store is PostgreSQL")
    else:
        (claim,) = by_kind["PersistentVolumeClaim"]
        if volumes["data"].get("persistentVolumeClaim", {}).get("claimName") != claim["metadata"]["name"]:
            problems.append("the data volume is not the chart's PersistentVolumeClaim")
        if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
            problems.append("the embedded store needs the Recreate strategy (one process holds it)")
    jwt = values.get("jwt", {}).get("existingSecret")
    if jwt and volumes.get("jwt", {}).get("secret", {}).get("secretName") != jwt:
        problems.append("the JWT key Secret is not mounted")
    return problems


def main():
    chart_dir = sys.argv[1]
    failed = False
    for name, (values, kinds) in CASES.items():
        problems = check_case(chart_dir, values, kinds)
        print(f"[check-deploy] {name}: {'ok' if not problems else 'FAILED'}", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
