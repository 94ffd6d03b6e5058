#!/usr/bin/env bash
# provbox vs nginx, side by side in one run on this machine, serving the same 4 KiB and
# 1 MiB files on loopback, measured with wrk. For each file and connection count the two
# servers are measured alternately RUNS times (provbox, nginx, provbox, nginx, ...), so
# load from elsewhere on the machine hits both alike; prints every pair's requests/s and
# ratio and each server's CPU microseconds per request (user + system; nginx: its
# workers), then the median ratio, with the load average before and after. Also provbox's
# RSS before and after (it should stay flat).
# Both run with access logging off and two workers (this machine has 2 cores); nginx with
# sendfile and tcp_nopush, provbox with its sendfile path for snapshot-backed bodies.
# Usage: bench/http.sh [seconds-per-run (default 10)] [connections (default "16 50")]
#        RUNS=5 FILES=big.bin bench/http.sh 10 "16 50"
#        NO_BUILD=1 PROVBOX=/path/to/provbox bench/http.sh   (a given binary, no build)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${1:-10}
CONNS=${2:-16 50}
RUNS=${RUNS:-3}
FILES=${FILES:-small.cfg big.bin}
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx: apt-get install -y wrk nginx-light" >&2; exit 1; }
[ "${NO_BUILD:-0}" = 1 ] || nice cargo build --release -q -p provbox
PROVBOX=${PROVBOX:-./target/release/provbox}
work=$(mktemp -d)
stop_jobs_and_nginx_on_exit "$work"
mkdir -p "$work/files" "$work/nginx"
chmod 755 "$work" "$work/files"   # nginx workers run unprivileged
head -c 4096 /dev/urandom > "$work/files/small.cfg"
head -c $((1024*1024)) /dev/urandom > "$work/files/big.bin"
PB=$(free_port); NG=$(free_port)

# Every wrk connection comes from 127.0.0.1, so the per-address cap (64 by default; real
# phones each have their own address) is lifted to the connection cap.
{ provbox_yaml_head; cat <<YAML; } > "$work/config.yaml"
http: {enabled: true, listen: ["127.0.0.1:$PB"], limits: {max_connections: 4096, max_connections_per_ip: 4096}}
YAML
"$PROVBOX" serve --config "$work/config.yaml" 2>"$work/provbox.log" &
PBPID=$!

{ nginx_head "$work" 4096; cat <<NGINX; } > "$work/nginx/nginx.conf"
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NG; root $work/files; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
for port in $PB $NG; do
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/small.cfg" && break; sleep 0.1; done
done
rss() { awk '/VmRSS/{print $2}' "/proc/$PBPID/status"; }
RSS0=$(rss)

# CPU ticks (user + system) of provbox, or of nginx's workers: load elsewhere on the
# machine moves requests/s a lot, CPU per request much less.
ticks() { # port
  local pids=$PBPID t=0
  [ "$1" = "$NG" ] && pids=$(pgrep -P "$(cat "$work/nginx.pid")")
  for p in $pids; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
run() { # port file conns -> "rps p99ms cpu_us_per_req errors"
  local t0 t1
  t0=$(ticks "$1")
  wrk -t2 -c"$3" -d"${DUR}s" --latency "http://127.0.0.1:$1/$2" > "$work/wrk.out"
  t1=$(ticks "$1")
  rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")
  reqs=$(awk '/requests in/{print $1}' "$work/wrk.out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.0f", t / hz * 1e6 / (n > 0 ? n : 1)}')
  p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  errs=$(awk '/Non-2xx|Socket errors/{print}' "$work/wrk.out" | tr ' ' '_' | tr '\n' ' ')
  echo "$rps $p99 $cpu ${errs:-none}"
}
median() { sort -g | awk '{v[NR]=$1} END{print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t2 -d${DUR}s, $RUNS alternating runs"
printf '%-10s %5s %4s %12s %7s %7s %12s %7s %7s %8s   %s\n' file conns run provbox_rps p99_ms cpu_us nginx_rps p99_ms cpu_us ratio errors
for f in $FILES; do
  for c in $CONNS; do
    ratios=()
    for r in $(seq "$RUNS"); do
      read -r prps pp99 pcpu perr < <(run "$PB" "$f" "$c")
      read -r nrps np99 ncpu nerr < <(run "$NG" "$f" "$c")
      ratio=$(awk -v a="$prps" -v b="$nrps" 'BEGIN{printf "%.3f", a/b}')
      ratios+=("$ratio")
      printf '%-10s %5s %4s %12s %7s %7s %12s %7s %7s %7sx   %s\n' "$f" "$c" "$r" "$prps" "$pp99" "$pcpu" "$nrps" "$np99" "$ncpu" "$ratio" "provbox:$perr nginx:$nerr"
    done
    printf '%-10s %5s  median provbox/nginx req/s = %sx (runs: %s)\n' "$f" "$c" \
      "$(printf '%s\n' "${ratios[@]}" | median)" "${ratios[*]}"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "provbox RSS: ${RSS0} kB before, $(rss) kB after all runs"
