# gnuplot script of `make bench`: build/bench/bench.png from build/bench/plot.dat.
#   gnuplot -e "dir='build/bench'" erlang_test/bench/bench.gp
# Three panels, C node beside BEAM peer: calls/s per request and number of callers;
# casts/s end to end; p99 latency of the call cells.
if (!exists("dir")) dir = 'build/bench'
title = system(sprintf("cat '%s/plot.title' 2>/dev/null", dir))
calls = "< grep -v '^\"cast' ".dir."/plot.dat"
casts = "< grep '^#\\|^\"cast' ".dir."/plot.dat"
set terminal pngcairo size 1500,560 font "sans,10" noenhanced
set output dir.'/bench.png'
set multiplot title "make bench: C node vs BEAM peer, one run (".title.")"

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set xtics rotate by 30 right nomirror
set yrange [0:*]
set format y "%.0s%c"
set offsets 0, 0, graph 0.12, 0
C = "#1f77b4"
B = "#ff7f0e"

set origin 0, 0
set size 0.45, 0.93
set title "GenServer.call throughput (calls/s, higher is better)"
set ylabel "calls/s"
plot calls using 2:xtic(1) title "C node" lc rgb C, '' using 3 title "BEAM peer" lc rgb B

set origin 0.45, 0
set size 0.15, 0.93
set title "cast end to end (casts/s)"
set ylabel ""
unset key
plot casts using 2:xtic(1) title "C" lc rgb C, '' using 3 title "BEAM" lc rgb B

set origin 0.6, 0
set size 0.4, 0.93
set title "GenServer.call p99 latency (µs, lower is better)"
set ylabel "µs"
set key top left
set format y "%g"
set offsets 0, 0, 0, 0
set logscale y
set yrange [10:*]
plot calls using 4:xtic(1) title "C node" lc rgb C, '' using 5 title "BEAM peer" lc rgb B
unset multiplot
