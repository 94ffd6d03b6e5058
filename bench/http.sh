#!/usr/bin/env bash
# provbox vs nginx, side by side in one run on this machine, serving the same 4 KiB and
# 1 MiB files on loopback, measured with wrk. Prints requests/s, p99 latency and the
# provbox/nginx ratio, plus provbox's RSS before and after (it should stay flat).
# Both run with access logging off and two workers (this machine has 2 cores).
# Usage: bench/http.sh [seconds-per-run (default 10)] [connections (default 50)]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONN=${2:-50}
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx: apt-get install -y wrk nginx-light" >&2; exit 1; }
cargo build --release -q
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/files" "$work/nginx"
chmod 755 "$work" "$work/files"   # nginx workers run unprivileged
head -c 4096 /dev/urandom > "$work/files/small.cfg"
head -c $((1024*1024)) /dev/urandom > "$work/files/big.bin"
pick() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PB=$(pick); NG=$(pick)

# Every wrk connection comes from 127.0.0.1, so the per-address cap (64 by default; real
# phones each have their own address) is lifted to the connection cap.
cat > "$work/config.yaml" <<YAML
data_dir: data
log: {level: warn}
catalog: {roots: [files]}
http: {enabled: true, listen: ["127.0.0.1:$PB"], limits: {max_connections: 4096, max_connections_per_ip: 4096}}
YAML
./target/release/provbox serve --config "$work/config.yaml" 2>"$work/provbox.log" &
PBPID=$!

cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$NG; root $work/files; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
for port in $PB $NG; do
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/small.cfg" && break; sleep 0.1; done
done
rss() { awk '/VmRSS/{print $2}' "/proc/$PBPID/status"; }
RSS0=$(rss)

run() { # port file -> "rps p99ms"
  wrk -t2 -c"$CONN" -d"${DUR}s" --latency "http://127.0.0.1:$1/$2" > "$work/wrk.out"
  rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  errs=$(awk '/Non-2xx|Socket errors/{print}' "$work/wrk.out" | tr '\n' ' ')
  echo "$rps $p99 ${errs:-none}"
}
printf '%-10s %-8s %12s %10s   %s\n' file server req/s p99_ms errors
for f in small.cfg big.bin; do
  read -r prps pp99 perr < <(run "$PB" "$f")
  read -r nrps np99 nerr < <(run "$NG" "$f")
  printf '%-10s %-8s %12s %10s   %s\n' "$f" provbox "$prps" "$pp99" "$perr"
  printf '%-10s %-8s %12s %10s   %s\n' "$f" nginx "$nrps" "$np99" "$nerr"
  awk -v a="$prps" -v b="$nrps" -v c="$pp99" -v d="$np99" -v f="$f" \
    'BEGIN{printf "%-10s ratio    provbox/nginx req/s = %.2fx, p99 = %.2fx\n", f, a/b, c/d}'
done
echo "provbox RSS: ${RSS0} kB before, $(rss) kB after all runs"
