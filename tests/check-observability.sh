#!/usr/bin/env bash
# The Prometheus rules and the Grafana dashboard in deploy/: `promtool check
# rules` and the rules' unit tests (`promtool test rules`), every dashboard
# query parsed by promtool (as a recording rule, Grafana's variables filled
# in), and every series the two name documented in docs/operations.md. The
# live /metrics text is checked by `promtool check metrics` in the demo test
# (crates/portcullis-cli/tests/it/demo.rs).
#
# promtool: $PROMTOOL, else `promtool` on PATH (Debian package `prometheus`).
set -euo pipefail
cd "$(dirname "$0")/.."

promtool="${PROMTOOL:-$(command -v promtool || true)}"
if [ -z "$promtool" ]; then
  echo "check-observability: promtool not found (apt-get install prometheus, or set PROMTOOL)" >&2
  exit 1
fi

"$promtool" check rules deploy/prometheus/alerts.yml
"$promtool" test rules deploy/prometheus/alerts.test.yml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - deploy/grafana/portcullis-dashboard.json deploy/prometheus/alerts.yml docs/operations.md "$tmp/dashboard-rules.yml" <<'PY'
import json, re, sys
dashboard, alerts, docs, out = sys.argv[1:]
d = json.load(open(dashboard))
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
walk(d["panels"])
for v in d["templating"]["list"]:
    if v["type"] == "query":
        exprs.append((v["name"], v["definition"].replace("label_values(", "group by (x) (", 1)))
if not exprs:
    sys.exit("no queries in the dashboard")
fill = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        for k, v in fill.items():
            e = e.replace(k, v)
        # label_values(metric, label) is Grafana's, not PromQL: keep the selector.
        e = re.sub(r"group by \(x\) \((.*), \w+\)$", r"group(\1)", e)
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
documented = set(re.findall(r"^\| `((?:portcullis|process)_\w+)`", open(docs).read(), re.M))
used = set()
for text in (open(dashboard).read(), open(alerts).read()):
    for name in re.findall(r"\b((?:portcullis|process)_[a-z_]+)", text):
        used.add(re.sub(r"_(bucket|count|sum)$", "", name))
missing = sorted(used - documented)
if missing:
    sys.exit(f"series used in deploy/ but not documented in {docs}: {missing}")
print(f"dashboard: {len(exprs)} queries; {len(used)} series used, all documented")
PY
"$promtool" check rules "$tmp/dashboard-rules.yml"
echo "check-observability: ok"
