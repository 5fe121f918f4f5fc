#!/usr/bin/env python3
"""Offline checks of cph-gateway's deployment files (run by deploy/validate.sh).

Input: the kustomize base rendered by a real `kubectl kustomize`. Checks:
  1. every rendered object against the Kubernetes JSON schemas shipped in the
     kubernetes-validate package (strict: unknown fields fail; an unknown
     kind/apiVersion fails too, where the package's CLI only warns);
  2. the properties the deployment must have (probes, resources, security,
     graceful shutdown, secrets, live config mount, Services, HPA, PDB,
     NetworkPolicy), cross-checked against the ConfigMap's gateway.toml;
  3. the Dockerfile (parsed by BuildKit's parser) and .dockerignore, and that
     they agree with the Deployment;
  4. the README's deploy steps in order (namespace, Secret, apply) as far as
     they can be run offline (the Secret command with --dry-run=client);
  5. the monitoring files (deploy/monitoring): the PrometheusRule and the
     Grafana dashboard parse, every PromQL expression parses, every metric
     they use is one the gateway exports (README's metrics table), and the
     alerts are the README's;
  6. optionally, the ConfigMap's config with the real binary's check-config:
     refused with the example Secret's placeholder, accepted with real-looking
     secrets.

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

import yaml

import check_steps

APP = "cph-gateway"
NAME_LABEL = "app.kubernetes.io/name"
# Oldest Kubernetes the manifests target: preStop `sleep` is GA in 1.32.
MIN_K8S = "1.32.0"

results: list[tuple[bool, str, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((bool(ok), name, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"  ({detail})" if detail else ""), flush=True)
    return bool(ok)


def group(title: str, fn: Callable[[], None]) -> None:
    """Runs one group of checks; an exception (missing object, wrong shape)
    is a failed check, not a crash."""
    print(f"\n== {title}", flush=True)
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(f"{title}: completed without error", False, f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

_QTY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_MULT = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(v: Any) -> float:
    m = _QTY.match(str(v))
    if not m:
        raise ValueError(f"not a quantity: {v!r}")
    return float(m.group(1)) * _MULT[m.group(2)]


def matches(selector: dict, labels: dict) -> bool:
    ml = (selector or {}).get("matchLabels") or {}
    if (selector or {}).get("matchExpressions"):
        return False  # not used here; treat as a mismatch to be noticed
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def toml_keys(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            keys |= toml_keys(v, path + ".")
        else:
            keys.add(path)
    return keys


def example_keys(text: str) -> set[str]:
    """Keys of config/gateway.toml, including the commented-out optional ones
    (`# key = value` under a [section])."""
    keys = toml_keys(tomllib.loads(text))
    section = ""
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^\[([A-Za-z0-9_.]+)\]", s)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^#\s*([a-z_][a-z0-9_]*)\s*=", s)
        if m and section:
            keys.add(f"{section}.{m.group(1)}")
    # named credentials: compare their fields, not their names; the example
    # mentions password_file only in a trailing comment
    keys = {re.sub(r"^iam\.credentials\.[^.]+\.", "iam.credentials.*.", k) for k in keys}
    return keys | {"iam.credentials.*.password_file"}


def apply_env_overrides(cfg: dict, env: dict[str, str]) -> dict:
    """The gateway's CPHGW__SECTION__KEY overrides (values are TOML literals,
    else strings), applied to a copy of the parsed config."""
    import copy
    cfg = copy.deepcopy(cfg)
    for name in sorted(env):
        if not name.startswith("CPHGW__"):
            continue
        path = [p.lower() for p in name[len("CPHGW__"):].split("__")]
        try:
            value = tomllib.loads(f"v = {env[name]}")["v"]
        except tomllib.TOMLDecodeError:
            value = env[name]
        t = cfg
        for seg in path[:-1]:
            t = t.setdefault(seg, {})
        t[path[-1]] = value
    return cfg


def secret_mount(container: dict, vols: dict, path: str) -> tuple[dict, str] | None:
    """The volume mount of `container` that puts `path` on a Secret volume,
    and the Secret key that becomes that file; None if there is none."""
    for m in container.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        secret = (vols.get(m["name"]) or {}).get("secret")
        if not secret or not path.startswith(base):
            continue
        rel = path[len(base):]
        items = secret.get("items")
        if items is None:
            return m, rel
        for item in items:
            if item.get("path") == rel:
                return m, item["key"]
    return None


def port_of(container: dict, port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise KeyError(f"container has no port named {port!r}")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", required=True, type=Path)
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--binary", default="", help="cph-gateway binary for check-config (optional)")
    ap.add_argument("--kubectl", required=True, help="kubectl (for kustomize and client-side dry runs)")
    args = ap.parse_args()
    repo: Path = args.repo
    kdir = repo / "deploy" / "kubernetes"

    docs = [d for d in yaml.safe_load_all(args.rendered.read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind: str, name: str | None = None) -> dict:
        objs = [o for o in by_kind.get(kind, []) if name is None or o["metadata"]["name"] == name]
        if len(objs) != 1:
            raise LookupError(f"expected one {kind}{' ' + name if name else ''}, found {len(objs)}")
        return objs[0]

    ctx: dict[str, Any] = {}
    ctx["example_secret"] = yaml.safe_load((kdir / "secret.example.yaml").read_text())

    # ---- 1. schemas ------------------------------------------------------
    def schemas() -> None:
        import kubernetes_validate.utils as kv
        newest = kv.latest_version()
        versions = [MIN_K8S] + ([newest] if newest != MIN_K8S else [])
        print(f"kubernetes-validate {kv.__version__}: schemas {kv.all_versions()[0]} .. {newest}; "
              f"validating strictly against {', '.join(versions)}")
        for d in docs:
            ident = f"{d['kind']}/{d['metadata']['name']} ({d['apiVersion']})"
            for v in versions:
                try:
                    got = kv.validate(d, v, strict=True)
                    check(f"schema {v} strict: {ident}", True, f"schema v{got}")
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    check(f"schema {v} strict: {ident}", False, f"{path}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    check(f"schema {v} strict: {ident}", False, e.message)

    # ---- 2. kustomization --------------------------------------------------
    def kustomization() -> None:
        kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        listed = set(kust.get("resources", []))
        present = {p.name for p in kdir.glob("*.yaml")} - {"kustomization.yaml"} - {p.name for p in kdir.glob("*.example.yaml")}
        check("every manifest file is listed in kustomization resources",
              present <= listed, f"unlisted: {sorted(present - listed)}" if present - listed else "")
        check("kustomization namespace is cph-gateway", kust.get("namespace") == APP)
        ns = one("Namespace")
        check("Namespace cph-gateway is part of the base", ns["metadata"]["name"] == APP)
        for d in docs:
            ident = f"{d['kind']}/{d['metadata']['name']}"
            md = d["metadata"]
            if d["kind"] != "Namespace":
                check(f"{ident} is in namespace {APP}", md.get("namespace") == APP, str(md.get("namespace")))
            check(f"{ident} has label {NAME_LABEL}={APP}", (md.get("labels") or {}).get(NAME_LABEL) == APP)
        for kind, n in [("Namespace", 1), ("ServiceAccount", 1), ("ConfigMap", 1), ("Secret", 0),
                        ("Deployment", 1), ("Service", 2), ("HorizontalPodAutoscaler", 1),
                        ("PodDisruptionBudget", 1), ("NetworkPolicy", 1)]:
            check(f"{n} {kind} object(s)", len(by_kind.get(kind, [])) == n, f"found {len(by_kind.get(kind, []))}")

    # ---- 3. configmap (gateway.toml + tenants.toml) -------------------------
    def configmap() -> None:
        cm = one("ConfigMap")
        data = cm.get("data", {})
        check("ConfigMap has gateway.toml and tenants.toml", {"gateway.toml", "tenants.toml"} <= set(data))
        cfg = tomllib.loads(data["gateway.toml"])
        ctx["cm"], ctx["cfg_raw"] = cm, cfg
        ex = example_keys((repo / "config" / "gateway.toml").read_text())
        ours = {re.sub(r"^iam\.credentials\.[^.]+\.", "iam.credentials.*.", k) for k in toml_keys(cfg)}
        check("gateway.toml uses only keys of config/gateway.toml", ours <= ex,
              f"unknown: {sorted(ours - ex)}" if ours - ex else f"{len(ours)} keys")
        srv = cfg.get("server", {})
        check("server.listen = 0.0.0.0:8080", srv.get("listen") == "0.0.0.0:8080", str(srv.get("listen")))
        check("server.admin_listen = 0.0.0.0:8081", srv.get("admin_listen") == "0.0.0.0:8081",
              str(srv.get("admin_listen")))
        check("tenants.file = /etc/cph-gateway/tenants.toml",
              cfg.get("tenants", {}).get("file") == "/etc/cph-gateway/tenants.toml")
        check("no secret values in gateway.toml (only *_env / *_file names)",
              not re.search(r"(?im)^\s*(password|secret|hs256_secret)\s*=", data["gateway.toml"]))
        tenants = tomllib.loads(data["tenants.toml"])
        creds = set(cfg.get("iam", {}).get("credentials", {}))
        used = {p.get("credential") for t in tenants.get("tenants", {}).values() for p in t.get("projects", [])}
        check("tenants.toml parses and has tenants", bool(tenants.get("tenants")), f"{len(tenants.get('tenants', {}))} tenant(s)")
        check("every credential named in tenants.toml exists in gateway.toml", used <= creds,
              f"missing: {sorted(used - creds)}" if used - creds else ", ".join(sorted(used)))

    # ---- 4. deployment -------------------------------------------------------
    def deployment() -> None:
        dep = one("Deployment", APP)
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
        ctx["dep"], ctx["pod_labels"] = dep, pod_labels
        check("no replicas field: the HPA owns the replica count (kubectl apply would reset it)",
              "replicas" not in spec, str(spec.get("replicas")))
        check("selector matches the pod template labels", matches(spec["selector"], pod_labels))
        ru = spec.get("strategy", {}).get("rollingUpdate", {})
        check("rolling update keeps every replica (maxUnavailable 0)", str(ru.get("maxUnavailable")) == "0")
        containers = pod["containers"]
        check("one container", len(containers) == 1)
        c = containers[0]
        ctx["container"] = c
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        check("container ports http=8080, admin=8081", ports.get("http") == 8080 and ports.get("admin") == 8081, str(ports))
        image = c.get("image", "")
        check("image is set by kustomize, tagged, not :latest",
              "/" in image and (":" in image.rsplit("/", 1)[-1] or "@sha256:" in image)
              and not image.endswith(":latest"), image)

        env = {e["name"]: e for e in c.get("env", [])}
        plain_env = {k: e["value"] for k, e in env.items() if "value" in e}
        ctx["plain_env"] = plain_env

        # probes
        for kind, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            p = c.get(kind) or {}
            hg = p.get("httpGet") or {}
            check(f"{kind} GET {path} on the admin port",
                  hg.get("path") == path and port_of(c, hg.get("port")) == 8081, f"{hg}")
        if "startupProbe" in c:
            hg = c["startupProbe"].get("httpGet") or {}
            check("startupProbe on the admin port", hg.get("path") in ("/healthz", "/readyz")
                  and port_of(c, hg.get("port")) == 8081, f"{hg}")

        # resources
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        check("resources: requests and limits for cpu and memory",
              all(k in req for k in ("cpu", "memory")) and all(k in lim for k in ("cpu", "memory")),
              f"requests={req} limits={lim}")
        check("resources: requests <= limits",
              all(quantity(req[k]) <= quantity(lim[k]) for k in ("cpu", "memory")))
        check("resources: requests cpu 100m memory 64Mi, limits cpu 1 memory 128Mi",
              quantity(req["cpu"]) == 0.1 and quantity(req["memory"]) == 64 * 2**20
              and quantity(lim["cpu"]) == 1 and quantity(lim["memory"]) == 128 * 2**20)

        # security
        psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
        def eff(key: str) -> Any:
            return csc.get(key, psc.get(key))
        check("runAsNonRoot", eff("runAsNonRoot") is True)
        check("runAsUser 65532 (nonroot)", eff("runAsUser") == 65532, str(eff("runAsUser")))
        check("readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
        check("allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
        check("not privileged", not csc.get("privileged", False))
        check("capabilities drop ALL", "ALL" in ((csc.get("capabilities") or {}).get("drop") or []))
        check("seccompProfile RuntimeDefault", (eff("seccompProfile") or {}).get("type") == "RuntimeDefault")
        check("automountServiceAccountToken false (pod)", pod.get("automountServiceAccountToken") is False)
        sa = one("ServiceAccount", pod.get("serviceAccountName", "default"))
        check("ServiceAccount exists and does not mount a token", sa.get("automountServiceAccountToken") is False)
        spread = [t for t in pod.get("topologySpreadConstraints", [])
                  if t.get("topologyKey") == "kubernetes.io/hostname" and matches(t.get("labelSelector"), pod_labels)]
        anti = [t for t in ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
                .get("preferredDuringSchedulingIgnoredDuringExecution", [])
                if t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
                and matches(t["podAffinityTerm"].get("labelSelector"), pod_labels)]
        check("replicas spread across nodes (topologySpreadConstraints / podAntiAffinity)", bool(spread or anti))

        # config mount: whole directory, no subPath
        args = (c.get("command") or []) + (c.get("args") or [])
        ctx["argv"] = args
        cfg_path = args[args.index("--config") + 1]
        cfg_dir, cfg_name = os.path.dirname(cfg_path), os.path.basename(cfg_path)
        cm = ctx["cm"]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        cm_vols = {n for n, v in vols.items() if (v.get("configMap") or {}).get("name") == cm["metadata"]["name"]}
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] in cm_vols]
        check("ConfigMap volume mounted once", len(mounts) == 1, str(mounts))
        m = mounts[0]
        check(f"config mounted at {cfg_dir} (dir of --config {cfg_path})", m["mountPath"] == cfg_dir, m["mountPath"])
        check("config mount has no subPath (updates propagate live)", "subPath" not in m and "subPathExpr" not in m)
        check("config mount is readOnly", m.get("readOnly") is True)
        check(f"ConfigMap has the key {cfg_name} named by --config", cfg_name in cm.get("data", {}))
        vol_items = (vols[m["name"]]["configMap"].get("items"))
        check("ConfigMap volume projects all keys (no items filter)", vol_items is None)

        # effective config = ConfigMap gateway.toml + container env overrides
        cfg = apply_env_overrides(ctx["cfg_raw"], plain_env)
        ctx["cfg"] = cfg
        tfile = cfg.get("tenants", {}).get("file", "")
        check("tenants.file lies in the ConfigMap mount, and the ConfigMap has it",
              os.path.dirname(tfile) == cfg_dir and os.path.basename(tfile) in cm["data"], tfile)
        admin = cfg.get("server", {}).get("admin_listen", "127.0.0.1:8081")
        listen = cfg.get("server", {}).get("listen", "0.0.0.0:8080")
        check("effective admin_listen is reachable from outside the pod on the admin port",
              admin.rsplit(":", 1)[0] in ("0.0.0.0", "[::]") and int(admin.rsplit(":", 1)[1]) == ports.get("admin"), admin)
        check("effective listen is reachable on the http port",
              listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]") and int(listen.rsplit(":", 1)[1]) == ports.get("http"), listen)

        # graceful shutdown
        grace_ms = int(cfg.get("server", {}).get("shutdown_grace_ms", 20000))
        pre = (c.get("lifecycle") or {}).get("preStop") or {}
        check("preStop hook present", bool(pre), str(pre))
        check("preStop needs no shell (sleep or httpGet; the image is distroless)",
              "sleep" in pre or "httpGet" in pre, str(pre))
        pre_ms = int((pre.get("sleep") or {}).get("seconds", 0)) * 1000
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        check("terminationGracePeriodSeconds*1000 > preStop sleep + server.shutdown_grace_ms",
              tgps * 1000 > pre_ms + grace_ms, f"{tgps * 1000} > {pre_ms} + {grace_ms}")

        # auth: an IdP's keys, no shared secret
        auth = cfg.get("auth", {})
        check("callers and admins are verified with a JWKS URL (an IdP), https",
              str(auth.get("jwks_url", "")).startswith("https://"), str(auth.get("jwks_url")))
        check("no HS256 secret in the base (every holder of it could mint any token)",
              not any(k.startswith("hs256_") for k in auth), ", ".join(k for k in auth if k.startswith("hs256_")))
        check("admin tokens must be asymmetric (allow_hs256_admin is not true)", auth.get("allow_hs256_admin") is not True)

        # secrets: every env var and file the config names comes from the Secret
        example = ctx["example_secret"]
        secrets = {s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {}))
                   for s in by_kind.get("Secret", []) + [example]}
        needed = []
        if auth.get("hs256_secret_env"):
            needed.append(auth["hs256_secret_env"])
        secret_files: dict[str, str] = {}
        file_keys = [(f"auth.{k}", v) for k, v in auth.items() if k.endswith("_file")]
        for name, cred in cfg.get("iam", {}).get("credentials", {}).items():
            for key, value in cred.items():
                if key.endswith("_env"):
                    needed.append(value)
                elif key.endswith("_file"):
                    file_keys.append((f"iam.credentials.{name}.{key}", value))
        for key, path in file_keys:
            mount = secret_mount(c, vols, path)
            ok = mount is not None and "subPath" not in mount[0]
            check(f"{key} is a file of a Secret volume mounted as a directory (updates reach the file)", ok, path)
            if ok:
                secret_name = vols[mount[0]["name"]]["secret"]["secretName"]
                check(f"{key}: Secret {secret_name} (secret.example.yaml) has the key {mount[1]}",
                      mount[1] in secrets.get(secret_name, set()), str(sorted(secrets.get(secret_name, set()))))
                secret_files[key] = mount[1]
        ctx["secret_files"] = secret_files
        for var in needed:
            ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            check(f"env {var} (named by the config) comes from a Secret key that exists",
                  ref.get("name") in secrets and ref.get("key") in secrets[ref.get("name")], str(ref))
        check("no secret given as a plain env value", not any(
            re.search(r"SECRET|PASSWORD|TOKEN", k) for k in plain_env), ", ".join(plain_env))
        mode = [v["secret"].get("defaultMode") for v in vols.values() if v.get("secret")]
        check("Secret volumes are not world-readable (defaultMode without the others bits), readable by fsGroup",
              all(m is not None and m & 0o007 == 0 for m in mode) and psc.get("fsGroup") == eff("runAsGroup"),
              f"modes {[oct(m) for m in mode if m is not None]}, fsGroup {psc.get('fsGroup')}")

    # ---- 5. secret ------------------------------------------------------------
    def secret() -> None:
        check("no Secret in the base: `kubectl apply -k` never overwrites the real one",
              not by_kind.get("Secret"), str([x["metadata"]["name"] for x in by_kind.get("Secret", [])]))
        kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        check("secret.example.yaml is not a kustomize resource", "secret.example.yaml" not in kust.get("resources", []))
        s = ctx["example_secret"]
        check("example Secret is cph-gateway-secrets in namespace cph-gateway",
              s["metadata"]["name"] == "cph-gateway-secrets" and s["metadata"].get("namespace") == APP)
        check("example Secret type Opaque", s.get("type") == "Opaque")
        check("example Secret uses stringData only (no base64 data in git)", "data" not in s and bool(s.get("stringData")))
        vals = s.get("stringData", {})
        check("example Secret values are placeholders (change-me...), which the gateway refuses",
              all(str(v).startswith("change-me") for v in vals.values()), ", ".join(vals))

    # ---- 6. services ------------------------------------------------------------
    def services() -> None:
        c, labels = ctx["container"], ctx["pod_labels"]
        svcs = by_kind.get("Service", [])
        caller = [s for s in svcs if any(p.get("name") == "http" for p in s["spec"]["ports"])]
        admin = [s for s in svcs if any(p.get("name") == "admin" for p in s["spec"]["ports"])]
        check("a Service with port http and one with port admin, distinct",
              len(caller) == 1 and len(admin) == 1 and caller[0] is not admin[0])
        for s, port, name in [(caller[0], 8080, "http"), (admin[0], 8081, "admin")]:
            ident = f"Service/{s['metadata']['name']}"
            sp = s["spec"]
            check(f"{ident} is ClusterIP", sp.get("type", "ClusterIP") == "ClusterIP")
            check(f"{ident} selects the gateway pods",
                  bool(sp.get("selector")) and all(labels.get(k) == v for k, v in sp["selector"].items()))
            check(f"{ident} exposes only {name} {port} -> container {port}",
                  len(sp["ports"]) == 1 and sp["ports"][0]["port"] == port
                  and port_of(c, sp["ports"][0].get("targetPort", port)) == port)
        ann = admin[0]["metadata"].get("annotations", {})
        check("admin Service has prometheus.io scrape annotations",
              ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "8081"
              and ann.get("prometheus.io/path", "/metrics") == "/metrics", str(ann))

    # ---- 7. HPA, PDB -----------------------------------------------------------
    def hpa_pdb() -> None:
        dep = ctx["dep"]
        h = one("HorizontalPodAutoscaler")
        check("HPA is autoscaling/v2", h["apiVersion"] == "autoscaling/v2")
        ref = h["spec"]["scaleTargetRef"]
        check("HPA targets the Deployment", ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"])
        check("HPA min 2 max 10", h["spec"].get("minReplicas") == 2 and h["spec"].get("maxReplicas") == 10)
        cpu = [m for m in h["spec"].get("metrics", []) if m.get("type") == "Resource"
               and m["resource"]["name"] == "cpu"]
        check("HPA on cpu 70% utilization",
              len(cpu) == 1 and cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70})
        p = one("PodDisruptionBudget")
        check("PDB is policy/v1", p["apiVersion"] == "policy/v1")
        check("PDB minAvailable 1 (< minReplicas, so drains can proceed)",
              p["spec"].get("minAvailable") == 1 and h["spec"]["minReplicas"] > 1)
        check("PDB selects the gateway pods", matches(p["spec"]["selector"], ctx["pod_labels"]))

    # ---- 8. network policy -------------------------------------------------------
    def netpol() -> None:
        n = one("NetworkPolicy")
        sp = n["spec"]
        check("NetworkPolicy selects the gateway pods", matches(sp["podSelector"], ctx["pod_labels"]))
        check("NetworkPolicy restricts Ingress and Egress", set(sp.get("policyTypes", [])) == {"Ingress", "Egress"})

        def rules_for(rules: list, port: int, proto: str = "TCP") -> list:
            return [r for r in rules if any(p.get("port") == port and p.get("protocol", "TCP") == proto
                                            for p in r.get("ports", []))]
        r8080 = rules_for(sp.get("ingress", []), 8080)
        check("ingress 8080 only from namespaces selected by label (callers)",
              bool(r8080) and all(r.get("from") and all("namespaceSelector" in f for f in r["from"]) for r in r8080),
              str([f for r in r8080 for f in r.get("from", [])]))
        r8081 = rules_for(sp.get("ingress", []), 8081)
        check("ingress 8081 from the monitoring namespace",
              any(((f.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name") == "monitoring"
                  for r in r8081 for f in r.get("from", [])))
        check("no ingress rule opens every port (each names its ports)", all(r.get("ports") for r in sp.get("ingress", [])))
        eg = sp.get("egress", [])
        for proto in ("UDP", "TCP"):
            dns = rules_for(eg, 53, proto)
            check(f"egress DNS 53/{proto} to kube-system",
                  any(((f.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name") == "kube-system"
                      for r in dns for f in r.get("to", [])))
        https = rules_for(eg, 443)
        check("egress 443 to anywhere (Huawei Cloud IAM/CPH endpoints)",
              any((f.get("ipBlock") or {}).get("cidr") == "0.0.0.0/0" for r in https for f in r.get("to", [])))

    # ---- 9. Dockerfile / .dockerignore ----------------------------------------------
    def dockerfile_checks() -> None:
        import dockerfile
        df = repo / "deploy" / "Dockerfile"
        cmds = dockerfile.parse_file(str(df))
        froms = [c for c in cmds if c.cmd == "FROM"]
        check("Dockerfile parses (BuildKit parser), multi-stage", len(froms) >= 2, f"{len(froms)} stages")
        check("builder is rust:1*-bookworm (same glibc as the runtime)",
              re.match(r"^rust:1(\.\d+)*-bookworm(@sha256:[0-9a-f]+)?$", froms[0].value[0]) is not None, froms[0].value[0])
        final_from = froms[-1].value[0]
        check("runtime is gcr.io/distroless/cc-debian12:nonroot",
              final_from.startswith("gcr.io/distroless/cc-debian12:nonroot"), final_from)
        final = cmds[cmds.index(froms[-1]):]
        runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
        check("builds with cargo build --release --locked", "cargo build --release --locked" in runs)
        cargo = tomllib.loads((repo / "Cargo.toml").read_text())
        bins = [b["name"] for b in cargo.get("bin", [])] or [cargo["package"]["name"]]
        check("the binary it copies (target/release/cph-gateway) is a bin of Cargo.toml",
              "target/release/cph-gateway" in runs and "cph-gateway" in bins, f"bins: {bins}")
        check("no cargo caching dummy that would break on benches/ or [[bench]]",
              not re.search(r"echo .*fn main.*>\s*src/main\.rs", runs))
        copies = [c for c in final if c.cmd == "COPY" and "--from=builder" in c.flags]
        check("runtime copies the binary to /usr/local/bin/cph-gateway",
              any(c.value[-1] == "/usr/local/bin/cph-gateway" for c in copies))
        users = [c.value[0] for c in final if c.cmd == "USER"]
        check("runtime USER nonroot (65532)", bool(users) and users[-1].split(":")[0] in ("65532", "nonroot"), str(users))
        exposed = {p.split("/")[0] for c in final if c.cmd == "EXPOSE" for p in c.value}
        check("EXPOSE 8080 8081", {"8080", "8081"} <= exposed, str(sorted(exposed)))
        envs: dict[str, str] = {}
        for c in final:
            if c.cmd == "ENV":
                envs.update(dict(zip(c.value[0::2], c.value[1::2])))
        check("ENV LOG_FORMAT=json and CPHGW__SERVER__ADMIN_LISTEN=0.0.0.0:8081",
              envs.get("LOG_FORMAT") == "json" and envs.get("CPHGW__SERVER__ADMIN_LISTEN") == "0.0.0.0:8081", str(envs))
        hc = [c for c in final if c.cmd == "HEALTHCHECK"]
        check("HEALTHCHECK is NONE or exec form (no shell in distroless)",
              bool(hc) and (hc[-1].value[0].upper() == "NONE" or hc[-1].json), str(hc[-1].value if hc else None))
        ep = [c for c in final if c.cmd == "ENTRYPOINT"]
        cm = [c for c in final if c.cmd == "CMD"]
        check("ENTRYPOINT/CMD in exec (JSON) form", all(c.json for c in ep + cm) and bool(ep or cm))
        argv = (list(ep[-1].value) if ep else []) + (list(cm[-1].value) if cm else [])
        want = ["/usr/local/bin/cph-gateway", "serve", "--config", "/etc/cph-gateway/gateway.toml"]
        check("default command: cph-gateway serve --config /etc/cph-gateway/gateway.toml", argv == want, str(argv))
        check("the Deployment runs the image's default command", ctx.get("argv") == argv, str(ctx.get("argv")))
        shell = [c.original for c in final if c.cmd in ("RUN",) or (c.cmd in ("CMD", "ENTRYPOINT") and not c.json)]
        check("runtime stage runs no shell (no RUN, no shell-form CMD)", not shell, str(shell))

        ign = [l.strip() for l in (repo / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.strip().startswith("#")]
        norm = {l.rstrip("/").lstrip("/") for l in ign}
        check(".dockerignore excludes target/ and .git/", {"target", ".git"} <= norm, str(sorted(norm)))
        needed = ["Cargo.toml", "Cargo.lock", "src", "src/main.rs", "benches", "tests"]
        excluded = [n for n in needed if any(l.lstrip("!") == l and (l.rstrip("/").lstrip("/") == n or l in ("*", "**"))
                                             for l in ign)]
        check(".dockerignore keeps Cargo.toml, Cargo.lock, src/, benches/, tests/", not excluded, str(excluded))

        # files the build embeds (include_str!/include_bytes!) must be in the context
        import fnmatch

        def ignored(path: str) -> bool:
            out = False
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            for line in ign:
                neg = line.startswith("!")
                pat = line.lstrip("!").strip("/")
                if any(fnmatch.fnmatch(p, pat) for p in prefixes):
                    out = not neg
            return out
        embedded = set()
        for f in (repo / "src").rglob("*.rs"):
            for rel in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', f.read_text()):
                embedded.add(os.path.relpath(os.path.normpath(f.parent / rel), repo))
        missing = sorted(p for p in embedded if ignored(p) or not (repo / p).exists())
        check("every file the build embeds is in the build context", bool(embedded) and not missing,
              f"missing: {missing}" if missing else f"{len(embedded)} files")

    # ---- 10, 11. deploy steps and monitoring (check_steps.py) -----------------------
    def readme_steps() -> None:
        check_steps.readme_steps(check, repo, kdir, args.kubectl, ctx)

    def monitoring() -> None:
        check_steps.monitoring(check, repo, args.kubectl)

    # ---- 12. real binary check-config (optional) ---------------------------------------
    def binary_check() -> None:
        b = args.binary
        if not b:
            print("skip: no fresh cph-gateway binary (set CPHGW_BIN=path, or build target/{release,debug}/cph-gateway)")
            return
        cm = ctx["cm"]
        placeholders = ctx["example_secret"].get("stringData", {})

        def run(values: dict[str, str]) -> tuple[int, str]:
            with tempfile.TemporaryDirectory() as tmp:
                for k, v in cm["data"].items():
                    Path(tmp, k).write_text(v)
                env = {k: v for k, v in os.environ.items() if not k.startswith("CPHGW")}
                env.update(ctx["plain_env"])
                env["CPHGW__TENANTS__FILE"] = str(Path(tmp, "tenants.toml"))  # the mount path, locally
                # each secret file the config names, where the Secret volume would put it
                for key, item in ctx["secret_files"].items():
                    Path(tmp, "secret-" + item).write_text(values[item])
                    env["CPHGW__" + key.upper().replace(".", "__")] = f'"{Path(tmp, "secret-" + item)}"'
                p = subprocess.run([b, "check-config", "--config", str(Path(tmp, "gateway.toml"))],
                                   env=env, capture_output=True, text=True, timeout=60)
                return p.returncode, (p.stdout + p.stderr).strip().replace("\n", " | ")

        real = {k: "s3cret-" + os.urandom(16).hex() for k in placeholders}
        for key, item in ctx["secret_files"].items():
            code, out = run({**real, item: placeholders[item]})
            check(f"{b} check-config refuses the example Secret's placeholder {item}, naming {key} (pods fail fast)",
                  code == 1 and key in out and "placeholder" in out, out or f"exit {code}")
        code, out = run(real)
        check(f"{b} check-config accepts the ConfigMap with real-looking secrets (the container's env)",
              code == 0, out or f"exit {code}")

    group("Kubernetes schemas (kubernetes-validate, offline)", schemas)
    group("kustomization", kustomization)
    group("ConfigMap", configmap)
    group("Deployment", deployment)
    group("Secret", secret)
    group("Services", services)
    group("HPA and PDB", hpa_pdb)
    group("NetworkPolicy", netpol)
    group("Dockerfile and .dockerignore", dockerfile_checks)
    group("deploy/README.md steps in order", readme_steps)
    group("monitoring (PrometheusRule, Grafana dashboard)", monitoring)
    group("check-config with the real binary", binary_check)

    failed = [r for r in results if not r[0]]
    print()
    for _, name, detail in failed:
        print(f"FAILED: {name}" + (f"  ({detail})" if detail else ""))
    print(f"deploy: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
