#!/usr/bin/env python3
"""Validates the output of `kubectl kustomize` of a Notify overlay, offline.

    validate.py --kubernetes-version 1.32.0 --name prod built.yaml

1. Schemas. Built-in kinds against the schemas bundled with kubernetes-validate for the
   given Kubernetes version, strict (an unknown field is an error, as `kubectl apply
   --validate=strict` would make it). KEDA's kinds (keda.sh) against the hand-written
   schemas in deploy/schemas/keda.sh (see deploy/schemas/README.md). Any other kind
   without a schema is an error, never a silent skip.
2. Rules of this platform that no schema knows: one Deployment per binary, probes on the
   right ports (and never on /metrics), the non-root read-only security context, grace
   periods longer than the drain, a PDB per Deployment, the API's Service and HPA, a KEDA
   ScaledObject per worker on its queue notify.<channel>, the migration Job, NetworkPolicies
   covering every pod, and no Secret in the output.

Exit status 1 when anything fails; every failure is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as kv_version

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CHANNELS = ["email", "sms", "whatsapp", "novu", "chat", "push"]
WORKERS = [f"{c}-worker" for c in CHANNELS]
BINARIES = ["notify-api", "outbox-relay", *WORKERS]
OPS_PORT = 9090
API_PORT = 8080
# Defaults of the binaries (README, Configuration).
DEFAULT_SHUTDOWN_GRACE_S = 20.0
DEFAULT_CONFIRM_TIMEOUT_S = 10.0
# A resource quantity (the schemas accept any string here; the API server would not).
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
# What a pod needs beyond the drain: the last outcome's commit, the ack, process exit.
GRACE_MARGIN_S = 10.0


class Report:
    def __init__(self, name: str):
        self.name = name
        self.errors: list[str] = []
        self.notes: list[str] = []

    def fail(self, what: str, message: str) -> None:
        self.errors.append(f"{what}: {message}")

    def check(self, ok: bool, what: str, message: str) -> None:
        if not ok:
            self.fail(what, message)


def ref(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def duration_seconds(text: str) -> float:
    """A humantime duration as the binaries take it (`20s`, `1m 30s`, `500ms`)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600}
    total, found = 0.0, False
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.strip()):
        if unit not in units:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += float(number) * units[unit]
        found = True
    if not found:
        raise ValueError(f"not a duration: {text!r}")
    return total


# --- 1. Schemas ----------------------------------------------------------------------------


def keda_validator(kind: str, api_version: str) -> jsonschema.Validator | None:
    version = api_version.split("/", 1)[1]
    path = SCHEMAS / "keda.sh" / f"{kind.lower()}-{version}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_schemas(docs: list[dict], k8s_version: str, report: Report) -> None:
    for doc in docs:
        what = ref(doc)
        api_version = doc.get("apiVersion", "")
        if api_version.split("/")[0] == "keda.sh":
            validator = keda_validator(doc["kind"], api_version)
            if validator is None:
                report.fail(what, f"no schema for {api_version} {doc['kind']} in {SCHEMAS / 'keda.sh'}")
                continue
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.path)
                report.fail(what, f"keda schema: {path}: {error.message}")
            continue
        try:
            kv.validate(doc, k8s_version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            report.fail(what, f"Kubernetes {e.version} schema: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            report.fail(what, e.message + " (a custom resource needs a schema in deploy/schemas)")


# --- 2. Platform rules ---------------------------------------------------------------------


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions) selects these labels."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_value(container: dict, name: str, configmaps: dict[str, dict]) -> str | None:
    for e in container.get("env", []):
        if e["name"] == name and "value" in e:
            return e["value"]
    for source in container.get("envFrom", []):
        cm = source.get("configMapRef", {}).get("name")
        if cm and name in configmaps.get(cm, {}):
            return configmaps[cm][name]
    return None


def check_security(obj: dict, report: Report) -> None:
    what = ref(obj)
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    report.check(psc.get("runAsNonRoot") is True, what, "pod securityContext.runAsNonRoot must be true")
    report.check(psc.get("runAsUser", 0) != 0, what, "pod securityContext.runAsUser must not be 0")
    report.check(
        psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", what, "pod seccompProfile must be RuntimeDefault"
    )
    report.check(spec.get("automountServiceAccountToken") is False, what, "automountServiceAccountToken must be false")
    report.check(
        spec.get("enableServiceLinks") is False,
        what,
        "enableServiceLinks must be false (service env vars would land in the NOTIFY_* namespace)",
    )
    for c in spec.get("initContainers", []) + spec["containers"]:
        cwhat = f"{what} container {c['name']}"
        sc = c.get("securityContext", {})
        report.check(sc.get("allowPrivilegeEscalation") is False, cwhat, "allowPrivilegeEscalation must be false")
        report.check(sc.get("readOnlyRootFilesystem") is True, cwhat, "readOnlyRootFilesystem must be true")
        report.check("ALL" in sc.get("capabilities", {}).get("drop", []), cwhat, "capabilities must drop ALL")
        res = c.get("resources", {})
        for r in ("cpu", "memory"):
            report.check(r in res.get("requests", {}), cwhat, f"resources.requests.{r} is required")
        report.check("memory" in res.get("limits", {}), cwhat, "resources.limits.memory is required")
        for section in ("requests", "limits"):
            for r, q in res.get(section, {}).items():
                report.check(bool(QUANTITY.match(str(q))), cwhat, f"resources.{section}.{r}: {q!r} is not a quantity")
        report.check(c.get("image", "").split("/")[-1].split(":")[0] == "notify", cwhat, "must run the notify image")


def check_probes(obj: dict, binary: str, container: dict, report: Report) -> None:
    what = ref(obj)
    port_name = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    expected = API_PORT if binary == "notify-api" else OPS_PORT
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        probe = container.get(kind)
        if not probe:
            report.fail(what, f"{kind} is required")
            continue
        get = probe.get("httpGet", {})
        port = get.get("port")
        port = port_name.get(port, port)
        report.check(get.get("path") == path, what, f"{kind} must GET {path}, not {get.get('path')}")
        report.check(port == expected, what, f"{kind} must probe port {expected}, not {port}")
        report.check(get.get("path") != "/metrics", what, f"{kind} must not probe /metrics")
    annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
    report.check(annotations.get("prometheus.io/scrape") == "true", what, "prometheus.io/scrape annotation missing")
    # Every binary, the API included, serves /metrics on the side port only.
    report.check(
        annotations.get("prometheus.io/port") == str(OPS_PORT), what, f"prometheus.io/port must be {OPS_PORT}"
    )
    report.check(annotations.get("prometheus.io/path") == "/metrics", what, "prometheus.io/path must be /metrics")


def check_platform(docs: list[dict], report: Report) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    configmaps = {n: cm.get("data", {}) for n, cm in by_kind.get("ConfigMap", {}).items()}
    pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())
    scaled = by_kind.get("ScaledObject", {})
    trigger_auths = by_kind.get("TriggerAuthentication", {})
    policies = list(by_kind.get("NetworkPolicy", {}).values())

    report.check("Secret" not in by_kind, "output", "contains a Secret: secret values are never committed")
    secret_refs: set[str] = set()

    for binary in BINARIES:
        if binary not in deployments:
            report.fail("output", f"no Deployment {binary}")
    for name, dep in deployments.items():
        what = ref(dep)
        spec = pod_spec(dep)
        containers = spec["containers"]
        report.check(len(containers) == 1, what, "one container per pod")
        c = containers[0]
        binary = (c.get("command") or [None])[0]
        report.check(binary == name, what, f"runs {binary!r}, expected the binary {name!r}")
        check_security(dep, report)
        check_probes(dep, name, c, report)
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                secret_refs.add(source["secretRef"]["name"])
            cm = source.get("configMapRef", {}).get("name")
            if cm:
                report.check(cm in configmaps, what, f"envFrom names ConfigMap {cm}, which is not in the output")

        # Side port of every binary (the API's serves /metrics only): the setting must bind
        # where the probes and Prometheus look.
        listen_key = {"outbox-relay": "NOTIFY_RELAY__LISTEN", "notify-api": "NOTIFY_OPS_LISTEN"}.get(
            name, "NOTIFY_WORKER__LISTEN"
        )
        listen = env_value(c, listen_key, configmaps)
        report.check(
            listen is not None and listen.endswith(f":{OPS_PORT}"),
            what,
            f"{listen_key} must be set to an address on :{OPS_PORT} (is {listen!r})",
        )
        if name == "notify-api":
            listen = env_value(c, "NOTIFY_LISTEN", configmaps) or f"0.0.0.0:{API_PORT}"
            report.check(listen.endswith(f":{API_PORT}"), what, f"NOTIFY_LISTEN must be on :{API_PORT}")

        # Grace period longer than the drain.
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if name in WORKERS:
            raw = env_value(c, "NOTIFY_WORKER__SHUTDOWN_GRACE", configmaps)
            try:
                drain = duration_seconds(raw) if raw else DEFAULT_SHUTDOWN_GRACE_S
            except ValueError as e:
                report.fail(what, f"NOTIFY_WORKER__SHUTDOWN_GRACE: {e}")
                continue
            report.check(
                grace >= drain + GRACE_MARGIN_S,
                what,
                f"terminationGracePeriodSeconds {grace} must exceed worker.shutdown_grace ({drain:g}s) by {GRACE_MARGIN_S:g}s",
            )
        elif name == "outbox-relay":
            raw = env_value(c, "NOTIFY_RELAY__CONFIRM_TIMEOUT", configmaps)
            try:
                drain = duration_seconds(raw) if raw else DEFAULT_CONFIRM_TIMEOUT_S
            except ValueError as e:
                report.fail(what, f"NOTIFY_RELAY__CONFIRM_TIMEOUT: {e}")
                continue
            report.check(
                grace >= drain + GRACE_MARGIN_S,
                what,
                f"terminationGracePeriodSeconds {grace} must exceed relay.confirm_timeout ({drain:g}s) by {GRACE_MARGIN_S:g}s",
            )
        else:
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = float(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0.0
            report.check(grace > sleep + GRACE_MARGIN_S, what, "terminationGracePeriodSeconds must exceed the preStop sleep")

        labels = pod_labels(dep)
        report.check(
            any(selects(p["spec"]["selector"], labels) for p in pdbs), what, "no PodDisruptionBudget selects its pods"
        )
        report.check(
            any(
                selects(p["spec"]["podSelector"], labels)
                and set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"}
                and not p["spec"].get("ingress")
                and not p["spec"].get("egress")
                for p in policies
            ),
            what,
            "no default-deny NetworkPolicy (Ingress and Egress) selects its pods",
        )

    # The API: Service, HPA, replicas owned by the HPA.
    api = deployments.get("notify-api")
    if api:
        services = [
            s for s in by_kind.get("Service", {}).values() if selects({"matchLabels": s["spec"].get("selector", {})}, pod_labels(api))
        ]
        report.check(len(services) == 1, ref(api), "exactly one Service must select the API's pods")
        for s in services:
            ports = {p["name"] for p in pod_spec(api)["containers"][0].get("ports", [])}
            for p in s["spec"]["ports"]:
                report.check(p.get("targetPort") in ports | {API_PORT}, ref(s), f"targetPort {p.get('targetPort')} is no API port")
        hpas = [
            h
            for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
            if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "notify-api"}
        ]
        report.check(len(hpas) == 1, ref(api), "exactly one HorizontalPodAutoscaler must target the API")
        report.check("replicas" not in api["spec"], ref(api), "replicas must be left to the HPA")
        policy_ok = any(
            selects(p["spec"]["podSelector"], pod_labels(api))
            and any(any(port.get("port") == API_PORT for port in rule.get("ports", [])) for rule in p["spec"].get("ingress", []))
            for p in policies
        )
        report.check(policy_ok, ref(api), f"no NetworkPolicy admits traffic to :{API_PORT}")

    # The workers: a ScaledObject each, on the channel's queue.
    for channel, worker in zip(CHANNELS, WORKERS):
        so = [s for s in scaled.values() if s["spec"]["scaleTargetRef"].get("name") == worker]
        if len(so) != 1:
            report.fail(f"Deployment/{worker}", f"needs exactly one ScaledObject, found {len(so)}")
            continue
        s = so[0]
        kind = s["spec"]["scaleTargetRef"].get("kind", "Deployment")
        report.check(kind == "Deployment", ref(s), "scaleTargetRef must be the Deployment")
        triggers = [t for t in s["spec"]["triggers"] if t["type"] == "rabbitmq"]
        report.check(len(triggers) == 1, ref(s), "needs one rabbitmq trigger")
        for t in triggers:
            md = t["metadata"]
            report.check(md.get("queueName") == f"notify.{channel}", ref(s), f"queueName must be notify.{channel}")
            report.check(md.get("mode") in ("QueueLength", "MessageRate"), ref(s), "mode must be QueueLength or MessageRate")
            report.check("value" in md, ref(s), "trigger value is required")
            auth = t.get("authenticationRef", {}).get("name")
            ta = trigger_auths.get(auth or "")
            if ta is None and "host" not in md and "hostFromEnv" not in md:
                report.fail(ref(s), f"authenticationRef {auth!r} is not in the output and no host is given")
            elif ta is not None:
                params = {r["parameter"] for r in ta["spec"].get("secretTargetRef", [])}
                report.check("host" in params, ref(ta), "must provide the `host` parameter")
                for r in ta["spec"].get("secretTargetRef", []):
                    secret_refs.add(r["name"])
        mn, mx = s["spec"].get("minReplicaCount", 0), s["spec"].get("maxReplicaCount", 100)
        report.check(1 <= mn <= mx, ref(s), f"replica counts must satisfy 1 <= min ({mn}) <= max ({mx})")
        if worker in deployments:
            report.check("replicas" not in deployments[worker]["spec"], f"Deployment/{worker}", "replicas must be left to KEDA")

    # The migration Job.
    jobs = by_kind.get("Job", {})
    commands = [
        c.get("command")
        for j in jobs.values()
        for c in pod_spec(j).get("initContainers", []) + pod_spec(j)["containers"]
    ]
    report.check(["notify-admin", "migrate"] in commands, "output", "no Job runs `notify-admin migrate`")
    report.check(
        ["outbox-relay", "declare-topology"] in commands, "output", "no Job runs `outbox-relay declare-topology`"
    )
    for j in jobs.values():
        check_security(j, report)
        for c in pod_spec(j).get("initContainers", []) + pod_spec(j)["containers"]:
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    secret_refs.add(source["secretRef"]["name"])
        report.check(
            any(selects(p["spec"]["podSelector"], pod_labels(j)) and not p["spec"].get("egress") and not p["spec"].get("ingress") for p in policies),
            ref(j),
            "no default-deny NetworkPolicy selects its pods",
        )

    # The first step of a deploy applies only `app.kubernetes.io/component in (shared,
    # migrate)` (deploy/README.md): that subset must hold everything the Job needs.
    first_step = {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("shared", "migrate")
    }
    for j in jobs.values():
        report.check(("Job", j["metadata"]["name"]) in first_step, ref(j), "must carry app.kubernetes.io/component: migrate")
        sa = pod_spec(j).get("serviceAccountName")
        if sa:
            report.check(("ServiceAccount", sa) in first_step, ref(j), f"ServiceAccount {sa} must be labelled component=shared")
        for c in pod_spec(j).get("initContainers", []) + pod_spec(j)["containers"]:
            for source in c.get("envFrom", []):
                cm = source.get("configMapRef", {}).get("name")
                if cm:
                    report.check(("ConfigMap", cm) in first_step, ref(j), f"ConfigMap {cm} must be labelled component=shared")

    report.notes.append(
        f"{len(docs)} objects; Secrets referenced, to be created out of band: {', '.join(sorted(secret_refs)) or 'none'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--name", required=True, help="the overlay's name, for the report")
    parser.add_argument("file", type=Path, help="output of kubectl kustomize")
    args = parser.parse_args()

    if kv.major_minor(args.kubernetes_version) not in {kv.major_minor(v) for v in kv.all_versions()}:
        print(
            f"kubernetes-validate {kv_version} has no schemas for Kubernetes {args.kubernetes_version}"
            f" (it has {kv.all_versions()[0]} to {kv.latest_version()})",
            file=sys.stderr,
        )
        return 2
    docs = [d for d in yaml.safe_load_all(args.file.read_text()) if d]
    report = Report(args.name)
    validate_schemas(docs, args.kubernetes_version, report)
    check_platform(docs, report)

    kinds: dict[str, int] = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(f"  {args.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    for note in report.notes:
        print(f"  {args.name}: {note}")
    for e in report.errors:
        print(f"  FAIL {args.name}: {e}")
    if report.errors:
        print(f"  {args.name}: {len(report.errors)} failure(s)")
        return 1
    print(f"  {args.name}: schemas (Kubernetes {args.kubernetes_version}, strict; KEDA: deploy/schemas) and platform rules OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
