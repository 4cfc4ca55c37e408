#!/usr/bin/env bash
# Draws bench/run.sh's results as an SVG chart: per row, throughput as a
# multiple of nginx (median bar, range over the rounds as a whisker) and the
# p99 latency it adds at half load over the upstream reached directly.
#
#   bench/chart.sh RESULTS.tsv OUT.svg
#
# RESULTS.tsv is what bench/run.sh writes (results.tsv): `#` lines first
# (`# title: ...` and `# subtitle: ...` head the chart), then one
# tab-separated line per row:
#   row label rps p50_ms p99_ms ratio ratio_min ratio_max half_rps half_p99_ms added_p99_ms
# with `-` where a row has no figure. The `direct` row is the baseline of
# the added latency and is left out of the chart. Uses Debian's gnuplot
# (gnuplot-nox), installed when missing, as wrk and nginx are by run.sh.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: bench/chart.sh RESULTS.tsv OUT.svg" >&2
    exit 2
fi
RESULTS=$1
OUT=$2
if ! command -v gnuplot >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

title=$(sed -n 's/^# title: //p' "$RESULTS" | head -1)
subtitle=$(sed -n 's/^# subtitle: //p' "$RESULTS" | head -1)

# The rows to draw, numbered from 0 (top) down, as gnuplot reads them:
# index, ratio, min, max, added p99 (NaN when missing), nginx or not, added p99 missing or not.
awk -F'\t' '
    /^#/ || NF < 11 || $1 == "direct" { next }
    function num(v) { return (v == "-" || v == "") ? "NaN" : v }
    { printf "%d\t%s\t%s\t%s\t%s\t%d\t%d\n", n++, num($6), num($7), num($8), num($11), ($1 == "nginx"), num($11) == "NaN" }
' "$RESULTS" >"$WORK/rows.dat"
rows=$(wc -l <"$WORK/rows.dat")
if [ "$rows" -eq 0 ]; then
    echo "bench/chart.sh: no rows in $RESULTS" >&2
    exit 1
fi
# The row labels as one gnuplot `set ytics (...)` list, quotes escaped.
ytics=$(awk -F'\t' '
    /^#/ || NF < 11 || $1 == "direct" { next }
    { l = $2; gsub(/\\/, "\\\\", l); gsub(/"/, "\\\"", l)
      printf "%s\"%s\" %d", (n ? ", " : ""), l, n; n++ }
' "$RESULTS")

gp_string() { # shell text -> gnuplot double-quoted string
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# Axis ends with room for the value labels, and a left margin for the longest row label.
read -r ratio_max added_min added_max label_len < <(awk -F'\t' '
    /^#/ || NF < 11 || $1 == "direct" { next }
    { if ($8 != "-" && $8 + 0 > r) r = $8 + 0
      if ($11 != "-") { if ($11 + 0 > hi) hi = $11 + 0; if ($11 + 0 < lo) lo = $11 + 0 }
      if (length($2) > len) len = length($2) }
    END { printf "%g %g %g %d\n", (r > 1 ? r : 1) * 1.25, lo * 1.3, (hi > 0 ? hi * 1.3 : 1), len }
' "$RESULTS")
height=$((150 + 42 * rows))
cat >"$WORK/chart.gp" <<GNUPLOT
set terminal svg size 960,$height noenhanced font "sans,12" background "#ffffff"
set encoding utf8
set output $(gp_string "$OUT")
set datafile separator "\t"
set datafile missing "NaN"
set style fill solid 0.85 noborder
set border 3
set tics nomirror out
set grid xtics lc "#dddddd"
set yrange [$rows - 0.5 : -0.5]
set ytics ($ytics) scale 0
set label 1 $(gp_string "$title") at screen 0.5, screen 1 offset 0, -1.2 center font "sans,14"
set label 2 $(gp_string "$subtitle") at screen 0.5, screen 1 offset 0, -2.4 center font "sans,11" tc "#555555"
set multiplot

bar(i) = i - 0.32
top(i) = i + 0.32
colour(n) = (n > 0.5) ? 0x999999 : 0x3366aa

# Left: throughput against nginx in the same round.
set origin 0, 0
set size 0.62, 1
set tmargin 5
set lmargin $((label_len * 3 / 4 + 3))
set rmargin 3
set xlabel "req/s as × nginx (bar: median; whisker: range)"
set xrange [0 : $ratio_max]
set arrow 1 from 1, graph 0 to 1, graph 1 nohead dt 2 lc "#999999"
plot "$WORK/rows.dat" using (\$2 / 2):1:(0):2:(bar(\$1)):(top(\$1)):(colour(\$6)) \
         with boxxyerror lc rgb variable notitle, \
     "" using 2:1:3:4 with xerrorbars pt -1 lc "#222222" notitle, \
     "" using 4:1:(sprintf(" %.2f×", \$2)) with labels left offset 0.5, 0 notitle
unset arrow 1
unset label 1
unset label 2

# Right: latency added at half load, same rows.
set origin 0.62, 0
set size 0.38, 1
set lmargin 2
unset ytics
set xlabel "added p99 at half load, ms"
set xrange [$added_min : $added_max]
set arrow 2 from 0, graph 0 to 0, graph 1 nohead lc "#222222"
plot "$WORK/rows.dat" using (\$5 / 2):1:((\$5 < 0) ? \$5 : 0):((\$5 < 0) ? 0 : \$5):(bar(\$1)):(top(\$1)):(colour(\$6)) \
         with boxxyerror lc rgb variable notitle, \
     "" using (\$5 < 0 ? 0 : \$5):1:(sprintf(" %+.2f", \$5)) with labels left offset 0.5, 0 notitle, \
     "" using (0):1:(\$7 > 0.5 ? " not measured" : "") with labels left offset 0.5, 0 tc "#777777" notitle
unset multiplot
GNUPLOT
gnuplot "$WORK/chart.gp"
