#!/usr/bin/env python3
"""Checks the rules of docker-compose.yml that `docker-compose config` does not: read from
the resolved file that command prints.

    docker-compose config > resolved.yaml && validate_compose.py resolved.yaml

Every published port is bound to 127.0.0.1; the eight binaries and the two one-shot jobs
exist, run the right command, and wait for what they need (`service_healthy`,
`service_completed_successfully`); every long-running service has a health check;
`postgres` and `rabbitmq` keep the ports `cargo xtask dev` and the tests use.
"""

from __future__ import annotations

import sys

import yaml

BINARIES = [
    "notify-api",
    "outbox-relay",
    "email-worker",
    "sms-worker",
    "whatsapp-worker",
    "novu-worker",
    "chat-worker",
    "push-worker",
    "webhook-worker",
]
ONE_SHOTS = {"migrate": ["notify-admin", "migrate"], "declare-topology": ["outbox-relay", "declare-topology"]}
INFRA = {"postgres": "5432", "rabbitmq": "5672"}


def main(path: str) -> int:
    config = yaml.safe_load(open(path))
    services = config.get("services", {})
    errors: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    for name, svc in services.items():
        for port in svc.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            check(str(text).startswith("127.0.0.1:"), f"{name}: port {text} is not bound to 127.0.0.1")
    for name, port in INFRA.items():
        svc = services.get(name)
        check(svc is not None, f"the `{name}` service is gone (`cargo xtask dev` starts it)")
        if svc:
            check(
                any(str(p).startswith(f"127.0.0.1:{port}:{port}") for p in svc.get("ports", [])),
                f"{name}: must publish 127.0.0.1:{port}",
            )
            check("healthcheck" in svc, f"{name}: needs a healthcheck")

    for name, command in ONE_SHOTS.items():
        svc = services.get(name)
        check(svc is not None, f"no one-shot service `{name}`")
        if svc:
            check(svc.get("command") == command, f"{name}: must run {' '.join(command)}")
            check(svc.get("restart", "no") == "no", f"{name}: a one-shot job must not restart")

    for name in BINARIES:
        svc = services.get(name)
        if svc is None:
            errors.append(f"no service `{name}`")
            continue
        check(svc.get("command") == [name], f"{name}: must run the binary {name}")
        check("healthcheck" in svc, f"{name}: needs a healthcheck")
        env = svc.get("environment", {})
        check("OTEL_EXPORTER_OTLP_ENDPOINT" in env, f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT is not set")
        deps = svc.get("depends_on", {})
        check(
            deps.get("migrate", {}).get("condition") == "service_completed_successfully",
            f"{name}: must wait for migrate (service_completed_successfully)",
        )
        check(deps.get("postgres", {}).get("condition") == "service_healthy", f"{name}: must wait for postgres (service_healthy)")
        if name != "notify-api":
            check(
                deps.get("declare-topology", {}).get("condition") == "service_completed_successfully",
                f"{name}: must wait for declare-topology (service_completed_successfully)",
            )
            check(deps.get("rabbitmq", {}).get("condition") == "service_healthy", f"{name}: must wait for rabbitmq (service_healthy)")
            listen = env.get("NOTIFY_RELAY__LISTEN" if name == "outbox-relay" else "NOTIFY_WORKER__LISTEN", "")
            check(str(listen).endswith(":9090"), f"{name}: its /readyz must listen on :9090 for the healthcheck")
        else:
            check(str(env.get("NOTIFY_OPS_LISTEN", "")).endswith(":9090"), f"{name}: /metrics must be served on :9090")
        grace = svc.get("stop_grace_period", "10s")
        if name.endswith("-worker"):
            seconds = int(str(grace).rstrip("s")) if str(grace).rstrip("s").isdigit() else 0
            check(seconds > 20, f"{name}: stop_grace_period {grace} must exceed worker.shutdown_grace (20s)")

    print(f"  compose: {len(services)} services: {', '.join(services)}")
    for e in errors:
        print(f"  FAIL compose: {e}")
    if errors:
        return 1
    print("  compose: rules OK (ports on 127.0.0.1, health checks, dependencies, one-shot jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
