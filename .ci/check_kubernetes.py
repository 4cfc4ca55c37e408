#!/usr/bin/env python3
"""Cross-checks of deploy/kubernetes/ that a schema cannot make: the manifests
agree with each other and with the ConfigMap's portcullis.toml (grace period
covers preStop + drain, probes hit the admin listener, selectors match, the
Secret holds every key that is mounted or referenced, the store URL names the
optional Redis Service and its password).

Usage: check_kubernetes.py DIR OUT KEY
Writes OUT/portcullis.toml (secret paths pointing into OUT/secrets/) and the
Secret's files into OUT/secrets/, the encryption-keys placeholder replaced by
KEY, so that `portcullis check` can run on the ConfigMap's config.
Run by tests/check-kubernetes.sh with the validator's virtualenv (PyYAML).
"""

import os
import re
import sys
import tomllib
from urllib.parse import urlsplit

import yaml

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)
    return ok


def seconds(duration):
    """A config duration like "25s", "1m30s" in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", duration)
    check(
        parts and "".join(n + u for n, u in parts) == duration.replace(" ", ""),
        f"cannot read duration {duration!r}",
    )
    return sum(int(n) * units[u] for n, u in parts)


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def main(directory, out, key):
    resources = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        with open(os.path.join(directory, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    resources[(doc["kind"], doc["metadata"]["name"])] = (name, doc)

    with open(os.path.join(directory, "kustomization.yaml")) as f:
        listed = yaml.safe_load(f)["resources"]
    for name in listed:
        check(os.path.exists(os.path.join(directory, name)), f"kustomization: {name} missing")
    files = {name for name, _ in resources.values()}
    for name in files - set(listed) - {"redis.yaml"}:
        problems.append(f"kustomization.yaml does not list {name}")

    def get(kind, name):
        entry = resources.get((kind, name))
        check(entry is not None, f"no {kind} {name}")
        return entry[1] if entry else {}

    config_map = get("ConfigMap", "portcullis")
    secret = get("Secret", "portcullis")
    deployment = get("Deployment", "portcullis")
    config_text = config_map["data"]["portcullis.toml"]
    config = tomllib.loads(config_text)
    secret_data = secret.get("stringData", {})

    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "portcullis"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # Selectors.
    check(deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          "Deployment selector does not match its pod labels")
    service = get("Service", "portcullis")
    check(service["spec"]["selector"].items() <= labels.items(),
          "Service selector does not match the pods")
    for p in service["spec"]["ports"]:
        check(p["targetPort"] in ports, f"Service targetPort {p['targetPort']} is no container port")
        check(p["targetPort"] != "admin", "the admin port must not be in the Service")
    pdb = get("PodDisruptionBudget", "portcullis")
    check(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          "PodDisruptionBudget selector does not match the pods")
    hpa = get("HorizontalPodAutoscaler", "portcullis")
    check(hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"],
          "HPA targets another Deployment")
    check(hpa["spec"]["minReplicas"] >= 2, "HPA minReplicas below 2: a drain empties the site")
    check("cpu" in container["resources"]["requests"], "HPA on CPU needs a CPU request")

    # Listeners and probes.
    check(ports["http"] == port_of(config["server"]["listen"]),
          "container port http differs from server.listen")
    check(ports["admin"] == port_of(config["admin"]["listen"]),
          "container port admin differs from admin.listen")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get_ = container[probe]["httpGet"]
        check(get_["path"] == path and get_["port"] == "admin",
              f"{probe} must ask {path} on the admin port")

    # Shutdown: SIGTERM comes after preStop, and the drain must end before SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = seconds(config["server"].get("drain_timeout", "30s"))
    grace = spec["terminationGracePeriodSeconds"]
    check(grace > pre_stop + drain,
          f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain_timeout {drain}")

    # Hardening.
    pod_sc, sc = spec["securityContext"], container["securityContext"]
    check(pod_sc.get("runAsNonRoot") is True, "runAsNonRoot")
    check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities: drop ALL")

    # Config file and secrets as mounted.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = container["args"]
    check(args[args.index("--config") + 1] == mounts["config"] + "/portcullis.toml",
          "--config is not the mounted ConfigMap")
    secret_dir = mounts["secrets"]
    mounted = {}
    for item in volumes["secrets"]["secret"]["items"]:
        check(item["key"] in secret_data, f"Secret has no key {item['key']}")
        mounted[f"{secret_dir}/{item['path']}"] = item["key"]
    for section, k in (("oidc", "client_secret_file"), ("session", "encryption_keys_file")):
        path = config[section][k]
        check(path in mounted, f"{section}.{k} {path} is not a mounted Secret key")
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["name"] == "portcullis" and ref["key"] in secret_data,
                  f"env {env['name']}: no such Secret key")

    # The optional Redis: the store URL names its Service, port and password.
    store = urlsplit(secret_data["store-url"])
    redis_service = get("Service", store.hostname)
    check(any(p["port"] == store.port for p in redis_service["spec"]["ports"]),
          "store-url port is not the Redis Service's")
    check(store.password == get("Secret", "portcullis-redis")["stringData"]["password"],
          "store-url password differs from the Redis Secret")

    # Files for `portcullis check`.
    os.makedirs(os.path.join(out, "secrets"), exist_ok=True)
    for path, secret_key in mounted.items():
        value = key if secret_key == "encryption-keys" else secret_data[secret_key]
        with open(os.path.join(out, "secrets", os.path.basename(path)), "w") as f:
            f.write(value + "\n")
    with open(os.path.join(out, "secrets", "store-url"), "w") as f:
        f.write(secret_data["store-url"])
    with open(os.path.join(out, "portcullis.toml"), "w") as f:
        f.write(config_text.replace(secret_dir + "/", os.path.join(out, "secrets") + "/"))

    for p in problems:
        print(f"check_kubernetes: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check_kubernetes: {len(resources)} resources consistent")


if __name__ == "__main__":
    main(*sys.argv[1:])
