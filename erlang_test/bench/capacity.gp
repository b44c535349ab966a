# gnuplot script of `make bench`'s capacity section: build/bench/capacity.png from
# build/bench/capacity.csv (scripts/bench-capacity.sh writes it).
#   gnuplot -e "dir='build/bench'" erlang_test/bench/capacity.gp
# One panel per request: p99 latency against achieved calls/s, one line per server and
# number of caller nodes, each point an open-loop step. The knee is where a line turns up.
if (!exists("dir")) dir = 'build/bench'
csv = dir.'/capacity.csv'
series(s, r, n) = sprintf("< awk -F, '$1==\"%s\" && $2==\"%s\" && $3==%d {print $5, $7}' %s", s, r, n, csv)
set terminal pngcairo size 1400,560 font "sans,10" noenhanced
set output dir.'/capacity.png'
set multiplot layout 1,2 title "make bench capacity: server pinned to one core, cnode-load on the other (p99 vs throughput)"
set logscale xy
set grid xtics ytics mxtics mytics
set ylabel "p99 latency, µs"
set format x "%.0s%c"
set key top left
set style data linespoints
do for [r in "increment check_rate"] {
    set xlabel "achieved calls/s, ".r
    plot series("cnode", r, 1) title "C node, 1 caller node" lc rgb "#1f77b4" pt 7, \
         series("cnode", r, 64) title "C node, 64 caller nodes" lc rgb "#1f77b4" dt 2 pt 5, \
         series("beam", r, 1) title "BEAM peer, 1 caller node" lc rgb "#ff7f0e" pt 7, \
         series("beam", r, 64) title "BEAM peer, 64 caller nodes" lc rgb "#ff7f0e" dt 2 pt 5
}
unset multiplot
