#!/usr/bin/env bash
# DNS: provbox (release) vs dnsmasq serving the same records, side by side, one run each,
# on loopback only. dnsperf drives both with the same query file for a bounded time.
#   bench/dns.sh            (DURATION=10 CLIENTS=4 OUTSTANDING=100 to tune;
#                            PROVBOX=path or PROVBOX_BIN=path for a given binary)
# Needs: dnsperf, dnsmasq (Debian packages of those names). Build first:
#   cargo build --release -j 1
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}        # seconds per run (dnsperf -l)
CLIENTS=${CLIENTS:-4}           # dnsperf -c
OUTSTANDING=${OUTSTANDING:-100} # dnsperf -q
BIN=${PROVBOX:-${PROVBOX_BIN:-$TARGET/release/provbox}}

for p in dnsperf dnsmasq; do
  command -v "$p" >/dev/null || { echo "$p is not installed (apt-get install -y $p)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no release binary at $BIN; run: cargo build --release -j 1" >&2; exit 1; }

WORK=$(mktemp -d /tmp/provbox-bench-dns.XXXXXX)
remove_on_exit "$WORK"

P_PORT=$(free_port)
D_PORT=$(free_port)

# The same records for both servers.
mkdir -p "$WORK/files"
cat > "$WORK/config.yaml" <<YAML
catalog:
  roots: [files]
log:
  level: warn
dns:
  enabled: true
  listen: ["127.0.0.1:$P_PORT"]
  zones:
    - name: lab.test
      records:
        - name: prov
          a: [127.0.0.1, 127.0.0.2]
        - name: tftp
          a: [127.0.0.3]
        - name: ntp
          a: [127.0.0.4]
        - name: v6
          aaaa: ["fd00::1"]
YAML
cat > "$WORK/queries.txt" <<Q
prov.lab.test A
prov.lab.test A
tftp.lab.test A
ntp.lab.test A
v6.lab.test AAAA
Q

"$BIN" serve --config "$WORK/config.yaml" >"$WORK/provbox.log" 2>&1 &
PIDS+=($!)
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
  --listen-address=127.0.0.1 --bind-interfaces --port="$D_PORT" --pid-file= \
  --user="$(id -un)" --cache-size=0 \
  --host-record=prov.lab.test,127.0.0.1 --host-record=prov.lab.test,127.0.0.2 \
  --host-record=tftp.lab.test,127.0.0.3 --host-record=ntp.lab.test,127.0.0.4 \
  --host-record=v6.lab.test,fd00::1 >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)

# Both must answer the same thing before anything is measured.
for i in $(seq 1 100); do
  # A server not up yet: dig fails, which must not end the script (set -e, pipefail).
  a=$(dig @127.0.0.1 -p "$P_PORT" +short +time=1 +tries=1 prov.lab.test A 2>/dev/null | sort | tr '\n' ' ') || a=
  b=$(dig @127.0.0.1 -p "$D_PORT" +short +time=1 +tries=1 prov.lab.test A 2>/dev/null | sort | tr '\n' ' ') || b=
  [ -n "$a" ] && [ "$a" = "$b" ] && break
  [ "$i" = 100 ] && { echo "servers not ready or answers differ: provbox [$a] dnsmasq [$b]" >&2; cat "$WORK"/*.log >&2; exit 1; }
  sleep 0.1
done

# Query latency is the first "Average Latency" (TCP runs add connection latency after it).
run() { # name port mode
  dnsperf -s 127.0.0.1 -p "$2" -m "$3" -d "$WORK/queries.txt" -l "$DURATION" \
    -c "$CLIENTS" -q "$OUTSTANDING" -T 1 -t 2 >"$WORK/$1-$3.out" 2>&1 || true
  local qps lat lost
  qps=$(awk '/Queries per second:/ {print $4}' "$WORK/$1-$3.out")
  lat=$(awk '/Average Latency \(s\):/ && !done {printf "%.3f", $4*1000; done=1}' "$WORK/$1-$3.out")
  lost=$(awk '/Queries lost:/ {print $3}' "$WORK/$1-$3.out")
  if [ -z "$qps" ]; then
    # dnsperf itself can give up (seen with dnsmasq over TCP); report it, keep the table.
    echo "dnsperf failed against $1 ($3): $(grep -m1 -i error "$WORK/$1-$3.out")" >&2
    echo "0 failed failed"; return
  fi
  echo "$qps $lat $lost"
}

echo "dnsperf ${DURATION}s per run, $CLIENTS clients, $OUTSTANDING outstanding, $(nproc) cores, $(dnsperf -h 2>&1 | awk '/^Version/ {print "dnsperf " $2}'), $(dnsmasq --version | head -1 | awk '{print "dnsmasq " $3}')"
printf "\n| transport | server | queries/s | avg latency ms | lost | qps ratio provbox/dnsmasq |\n|---|---|---:|---:|---:|---:|\n"
for mode in udp tcp; do
  read -r pq pl plost < <(run provbox "$P_PORT" "$mode")
  read -r dq dl dlost < <(run dnsmasq "$D_PORT" "$mode")
  ratio=$(awk -v a="$pq" -v b="$dq" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }')
  printf "| %s | provbox | %.0f | %s | %s | %s |\n" "$mode" "$pq" "$pl" "$plost" "$ratio"
  printf "| %s | dnsmasq | %.0f | %s | %s | 1.00 |\n" "$mode" "$dq" "$dl" "$dlost"
done
