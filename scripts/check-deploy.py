"""Renders the Helm chart with each set of values below and checks what comes out.

Run by scripts/check-deploy.sh (which installs the pinned tools): python check-deploy.py CHART.

For each set of values: helm lint finds no warning or error; the chart renders with Helm's own
engine (helm-python-sdk); every manifest is valid for Kubernetes $KUBERNETES_VERSION (strict
schemas, kubernetes-validate) and the ServiceMonitor for the Prometheus Operator's CRD schema;
and the manifests fit together: the expected kinds and no others, selectors that select the pod,
ports that exist, the TOML configuration readable, the database and key Secrets wired in, the
quick-start PostGIS wired to the broker. And values the chart must refuse fail to render, with
their message. Exits non-zero with every problem found.
"""

import base64
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
    "database Secret, JWT key Secret, ServiceMonitor, two replicas": (
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
    "database URL and JWT key as values (the chart's own Secret), two replicas": (
        {
            "replicaCount": 2,
            "database": {"url": "postgres://twinlink:s3cret@db:5432/twinlink"},
            "jwt": {"key": "an HS256 secret"},
        },
        {"ConfigMap", "Deployment", "Secret", "Service"},
    ),
    "quick-start PostGIS (generated password, volume claim), two replicas": (
        {"replicaCount": 2, "postgis": {"enabled": True}},
        {"ConfigMap", "Deployment", "Secret", "Service", "StatefulSet"},
    ),
    "quick-start PostGIS (password from a Secret, emptyDir)": (
        {"postgis": {"enabled": True, "existingSecret": "pg", "persistence": {"enabled": False}}},
        {"ConfigMap", "Deployment", "Service", "StatefulSet"},
    ),
}

# name: (values the chart must refuse to render, a part of its message)
REFUSED = {
    "two replicas on the embedded store": ({"replicaCount": 2}, "replicas cannot share it"),
    "a database Secret and the PostGIS": (
        {"database": {"existingSecret": "twinlink-db"}, "postgis": {"enabled": True}},
        "not several",
    ),
    "a database URL and a database Secret": (
        {"database": {"existingSecret": "twinlink-db", "url": "postgres://db/twinlink"}},
        "not several",
    ),
    "a JWT key and a JWT key Secret": (
        {"jwt": {"existingSecret": "twinlink-jwt", "key": "a secret"}},
        "not both",
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
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    service = services.pop(deployment["metadata"]["name"])
    (config_map,) = by_kind["ConfigMap"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]

    def selects(selector, what):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{what} {selector} does not select the pod {labels}")

    selects(deployment["spec"]["selector"]["matchLabels"], "Deployment selector")
    selects(service["spec"]["selector"], "Service selector")
    for other in services.values():
        if all(labels.get(k) == v for k, v in other["spec"]["selector"].items()):
            problems.append(f"Service {other['metadata']['name']} selects the broker's pod")
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
    # The Secrets the URL and the key come from: the given ones, or the chart's own.
    own = deployment["metadata"]["name"]
    database_values, jwt_values = values.get("database", {}), values.get("jwt", {})
    database = database_values.get("existingSecret") or (database_values.get("url") and own)
    jwt = jwt_values.get("existingSecret") or (jwt_values.get("key") and own)
    own_secret = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}.get(own, {})
    for given, secret_key in [
        (database_values.get("url"), database_values.get("secretKey", "database-url")),
        (jwt_values.get("key"), jwt_values.get("secretKey", "jwt-key.pem")),
    ]:
        stored = own_secret.get("data", {}).get(secret_key)
        if given and (stored is None or base64.b64decode(stored).decode() != given):
            problems.append(f"the chart's Secret {own} does not hold {secret_key} as given")
    postgis = values.get("postgis", {}).get("enabled")
    if postgis:
        problems += postgis_coherence(by_kind, env, service, values["postgis"])
    if database or postgis:
        ref = env.get("TWINLINK_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if database and ref.get("name") != database:
            problems.append("TWINLINK_DATABASE_URL does not come from the database Secret")
        if by_kind.get("PersistentVolumeClaim") or deployment["spec"].get("strategy"):
            problems.append("a claim or the Recreate strategy of the embedded store with PostgreSQL")
        if "persistentVolumeClaim" in volumes["data"]:
            problems.append("a claim for the embedded store although the store is PostgreSQL")
    else:
        (claim,) = by_kind["PersistentVolumeClaim"]
        if volumes["data"].get("persistentVolumeClaim", {}).get("claimName") != claim["metadata"]["name"]:
            problems.append("the data volume is not the chart's PersistentVolumeClaim")
        if deployment["spec"].get("strategy", {}).get("type") != "Recreate":
            problems.append("the embedded store needs the Recreate strategy (one process holds it)")
    if jwt and volumes.get("jwt", {}).get("secret", {}).get("secretName") != jwt:
        problems.append("the JWT key Secret is not mounted")
    return problems


def postgis_coherence(by_kind, env, broker_service, values):
    """The quick-start PostGIS: its Service selects its pod and not the broker's, its password
    comes from the Secret the broker's URL takes it from, and the URL names its Service, user and
    database."""
    problems = []
    (statefulset,) = by_kind["StatefulSet"]
    (service,) = [s for s in by_kind["Service"] if s is not broker_service]
    pod = statefulset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if statefulset["spec"]["selector"]["matchLabels"] != service["spec"]["selector"] or any(
        labels.get(k) != v for k, v in service["spec"]["selector"].items()
    ):
        problems.append("the PostGIS Service does not select the PostGIS pod")
    if statefulset["spec"]["serviceName"] != service["metadata"]["name"]:
        problems.append("the StatefulSet's serviceName is not the PostGIS Service")
    (container,) = pod["spec"]["containers"]
    pg_env = {e["name"]: e for e in container["env"]}
    pg_ref = pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    broker_ref = env.get("POSTGIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if broker_ref != pg_ref:
        problems.append(f"the broker takes the password from {broker_ref}, PostGIS from {pg_ref}")
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    given = values.get("existingSecret")
    if given:
        if pg_ref["name"] != given:
            problems.append(f"the password does not come from the given Secret {given}")
    elif "password" not in secrets.get(pg_ref["name"], {}).get("data", {}):
        problems.append(f"no Secret {pg_ref['name']} with a generated password")
    names = [e["name"] for e in env.values()]
    url = env.get("TWINLINK_DATABASE_URL", {}).get("value", "")
    user, database = pg_env["POSTGRES_USER"]["value"], pg_env["POSTGRES_DB"]["value"]
    expected = f"postgres://{user}:$(POSTGIS_PASSWORD)@{service['metadata']['name']}:5432/{database}"
    if url != expected:
        problems.append(f"TWINLINK_DATABASE_URL is {url!r}, expected {expected!r}")
    elif names.index("POSTGIS_PASSWORD") > names.index("TWINLINK_DATABASE_URL"):
        problems.append("POSTGIS_PASSWORD comes after the URL that expands it")
    ports = {p["name"] for p in container["ports"]}
    if any(p["targetPort"] not in ports or p["port"] != 5432 for p in service["spec"]["ports"]):
        problems.append("the PostGIS Service's port is not the container's 5432")
    claims = statefulset["spec"].get("volumeClaimTemplates", [])
    volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
    persistent = values.get("persistence", {}).get("enabled", True)
    if persistent != bool(claims) or persistent == ("data" in volumes):
        problems.append("the PostGIS data is not in a claim (persistence on) or an emptyDir (off)")
    return problems


def refused(chart_dir, values, message):
    """The problems of values the chart must refuse: it renders, or fails with another message."""
    try:
        helm_python.Chart.load(chart_dir).render(values, name="twin", namespace="twinlink")
    except Exception as e:  # helm_python's render error
        return [] if message in str(e) else [f"refused with another message: {e}"]
    return ["rendered although it must refuse these values"]


def main():
    chart_dir = sys.argv[1]
    failed = False
    checks = [(name, lambda v=v, k=k: check_case(chart_dir, v, k)) for name, (v, k) in CASES.items()]
    checks += [(f"refuses {name}", lambda v=v, m=m: refused(chart_dir, v, m)) for name, (v, m) in REFUSED.items()]
    for name, check in checks:
        problems = check()
        print(f"[check-deploy] {name}: {'ok' if not problems else 'FAILED'}", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
