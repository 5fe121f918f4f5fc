"""The deploy steps of deploy/README.md and the monitoring files
(deploy/monitoring), checked offline; used by check_manifests.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

APP = "cph-gateway"
# Oldest Kubernetes the manifests target (as in check_manifests.py).
MIN_K8S = "1.32.0"

Check = Callable[..., bool]


def readme_steps(check: Check, repo: Path, kdir: Path, kubectl: str, ctx: dict[str, Any]) -> None:
    """The README's deploy steps, as far as they run offline."""
    text = (repo / "deploy" / "README.md").read_text()
    section = text.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("kubectl"):
                commands.append(line)
    print("deploy steps: " + " | ".join(commands))

    def first(pattern: str) -> int:
        return next((i for i, c in enumerate(commands) if re.search(pattern, c)), -1)
    ns_i = first(r"^kubectl (apply -f deploy/kubernetes/namespace\.yaml|create namespace cph-gateway)\b")
    sec_i = first(r"create secret generic cph-gateway-secrets\b")
    apply_i = first(r"^kubectl apply -k deploy/kubernetes$")
    check("deploy/README.md creates the namespace, then the Secret, then applies the base",
          0 <= ns_i < sec_i < apply_i, f"namespace {ns_i}, secret {sec_i}, apply {apply_i}")
    ns = yaml.safe_load((kdir / "namespace.yaml").read_text())
    check("namespace.yaml is the Namespace the base uses",
          ns.get("kind") == "Namespace" and ns["metadata"]["name"] == APP)
    if sec_i < 0:
        return
    argv = shlex.split(commands[sec_i])
    check("the Secret command names the namespace cph-gateway",
          any(a in ("-n", "--namespace") and argv[i + 1] == APP for i, a in enumerate(argv[:-1]))
          or f"--namespace={APP}" in argv, commands[sec_i])
    with tempfile.TemporaryDirectory() as tmp:
        run = [kubectl]
        for a in argv[1:]:
            m = re.match(r"^--from-file=([^=]+)=(.+)$", a)
            if m:
                Path(tmp, m.group(1)).write_text("not-a-real-password-0123456789")
                a = f"--from-file={m.group(1)}={Path(tmp, m.group(1))}"
            if a in ("--dry-run=client", "-o", "yaml"):
                continue
            run.append(a)
        run += ["--dry-run=client", "-o", "yaml"]
        p = subprocess.run(run, capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", ""), "HOME": tmp})
        made = yaml.safe_load(p.stdout) if p.returncode == 0 else {}
    check("the Secret command runs (kubectl --dry-run=client, offline)", p.returncode == 0, p.stderr.strip()[:200])
    keys = set((made or {}).get("data") or {}) | set((made or {}).get("stringData") or {})
    want = set(ctx.get("secret_files", {}).values())
    check("it makes Secret cph-gateway-secrets in cph-gateway with every key the config reads",
          (made or {}).get("kind") == "Secret" and made["metadata"]["name"] == "cph-gateway-secrets"
          and made["metadata"].get("namespace") == APP and want <= keys,
          f"keys {sorted(keys)}, needed {sorted(want)}")


def monitoring(check: Check, repo: Path, kubectl: str) -> None:
    """The PrometheusRule and the Grafana dashboard."""
    import promql_parser
    mdir = repo / "deploy" / "monitoring"
    readme = (repo / "README.md").read_text()
    # the gateway's metrics: README's table (a test keeps it equal to /metrics)
    series: set[str] = set()
    for name, kind in re.findall(r"^\| `(cphgw_[a-z0-9_]+)[^`]*` \| (\w+) \|", readme, flags=re.M):
        series.add(name)
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    check("README's metrics table lists the gateway's metrics", len(series) >= 10, f"{len(series)} series")

    def metrics_of(expr: str, what: str) -> None:
        expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
        try:
            ast = promql_parser.parse(expr)
        except Exception as e:  # noqa: BLE001
            check(f"{what}: PromQL parses", False, f"{e}: {expr}")
            return
        names: list[str] = []
        promql_parser.walk(ast, lambda n: names.append(n.name) if isinstance(n, promql_parser.VectorSelector) else None)
        unknown = [n for n in names if n not in series]
        check(f"{what}: PromQL parses and uses only the gateway's metrics", bool(names) and not unknown,
              f"unknown: {unknown}" if unknown else ", ".join(sorted(set(names))))

    p = subprocess.run([kubectl, "kustomize", str(mdir)], capture_output=True, text=True, timeout=60)
    check("kubectl kustomize deploy/monitoring renders", p.returncode == 0, p.stderr.strip()[:200])
    objs = [d for d in yaml.safe_load_all(p.stdout) if d] if p.returncode == 0 else []
    cms = [o for o in objs if o["kind"] == "ConfigMap"]
    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    check("one dashboard ConfigMap labelled grafana_dashboard=1 and one PrometheusRule, in cph-gateway",
          len(cms) == 1 and len(rules) == 1 and (cms[0]["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"
          and all(o["metadata"].get("namespace") == APP for o in objs))
    import kubernetes_validate.utils as kv
    for cm in cms:
        try:
            kv.validate(cm, MIN_K8S, strict=True)
            check("dashboard ConfigMap: schema strict", True)
        except kv.ValidationError as e:
            check("dashboard ConfigMap: schema strict", False, e.message)

    # PrometheusRule: the operator's shape, strictly
    rule = rules[0] if rules else yaml.safe_load((mdir / "prometheusrule.yaml").read_text())
    check("PrometheusRule is monitoring.coreos.com/v1", rule.get("apiVersion") == "monitoring.coreos.com/v1")
    groups = (rule.get("spec") or {}).get("groups") or []
    check("PrometheusRule has rule groups", bool(groups) and all(g.get("name") and g.get("rules") for g in groups))
    alerts = {}
    for g in groups:
        for r in g.get("rules", []):
            name = r.get("alert", "?")
            extra = set(r) - {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            check(f"alert {name}: only the operator's rule fields", "alert" in r and not extra, str(sorted(extra)))
            metrics_of(str(r.get("expr", "")), f"alert {name}")
            if "for" in r:
                try:
                    promql_parser.parse_duration(str(r["for"]))
                    check(f"alert {name}: `for` is a duration", True, str(r["for"]))
                except Exception as e:  # noqa: BLE001
                    check(f"alert {name}: `for` is a duration", False, str(e))
            check(f"alert {name}: severity label and summary annotation",
                  (r.get("labels") or {}).get("severity") in ("critical", "warning", "info")
                  and bool((r.get("annotations") or {}).get("summary")))
            check(f"alert {name}: one rule of that name", name not in alerts)
            alerts[name] = r
    block = re.search(r"Sample alerts.*?```yaml\n(.*?)```", readme, flags=re.S)
    documented = yaml.safe_load(block.group(1)) if block else []
    norm = lambda e: " ".join(str(e).split())  # noqa: E731
    for a in documented:
        r = alerts.get(a["alert"])
        check(f"README alert {a['alert']} is in the PrometheusRule, same expr and for",
              r is not None and norm(r["expr"]) == norm(a["expr"]) and str(r.get("for")) == str(a.get("for")))
    check("every PrometheusRule alert is in the README", set(alerts) <= {a["alert"] for a in documented},
          str(sorted(set(alerts) - {a["alert"] for a in documented})))

    # Grafana dashboard
    try:
        dash = json.loads((mdir / "dashboard.json").read_text())
        check("dashboard.json parses", True)
    except ValueError as e:
        check("dashboard.json parses", False, str(e))
        return
    check("dashboard has uid, title, schemaVersion and panels",
          bool(dash.get("uid")) and bool(dash.get("title")) and isinstance(dash.get("schemaVersion"), int)
          and bool(dash.get("panels")))
    variables = {v["name"]: v for v in (dash.get("templating") or {}).get("list", [])}
    check("dashboard has a Prometheus datasource variable",
          (variables.get("datasource") or {}).get("type") == "datasource"
          and variables["datasource"].get("query") == "prometheus")
    ids = [pnl.get("id") for pnl in dash["panels"]]
    check("dashboard panel ids are unique", len(ids) == len(set(ids)), str(ids))
    for pnl in dash["panels"]:
        gp = pnl.get("gridPos") or {}
        title = pnl.get("title", "?")
        check(f"panel {title!r}: gridPos within 24 columns",
              all(isinstance(gp.get(k), int) for k in "hwxy") and gp["x"] + gp["w"] <= 24)
        targets = pnl.get("targets") or []
        check(f"panel {title!r}: has queries on the datasource variable",
              bool(targets) and all((t.get("datasource") or pnl.get("datasource") or {}).get("uid") == "${datasource}"
                                    for t in targets))
        for t in targets:
            metrics_of(t.get("expr", ""), f"panel {title!r} {t.get('refId')}")

