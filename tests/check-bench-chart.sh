#!/usr/bin/env bash
# bench/chart.sh draws a fixed sample of bench/run.sh's results
# (bench/testdata/sample.tsv: a missing figure, a negative one, quotes, `&`
# and `<` in a label); the SVG must parse as XML and name the title and
# every charted row (all but `direct`) with its ratio to nginx. Checks the
# chart step without running a benchmark. bench/chart.sh installs gnuplot-nox
# from Debian when missing (as root; skipped otherwise), as for a real run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
  echo "check-bench-chart: skipped (no gnuplot, and not root to install gnuplot-nox)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sample=bench/testdata/sample.tsv
bench/chart.sh "$sample" "$tmp/chart.svg"
python3 - "$sample" "$tmp/chart.svg" <<'PY'
import sys
import xml.etree.ElementTree as ET

sample, svg = sys.argv[1:]
root = ET.parse(svg).getroot()
if not root.tag.endswith("svg"):
    sys.exit(f"check-bench-chart: root element is {root.tag}, not svg")
texts = {"".join(t.itertext()).strip() for t in root.iter() if t.tag.endswith("text")}
want = []
for line in open(sample, encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("# title: "):
        want.append(line[len("# title: "):])
    if line.startswith("#") or not line:
        continue
    row, label, *cols = line.split("\t")
    if row != "direct":
        want += [label, "%.2f×" % float(cols[3])]
missing = [w for w in want if w not in texts]
if missing:
    sys.exit(f"check-bench-chart: not in the SVG: {missing}")
print(f"check-bench-chart: {len(want)} labels found in the SVG")
PY
