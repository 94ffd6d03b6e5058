#!/usr/bin/env bash
# Fleet capacity: N simulated phones through the whole boot (relayed DHCP -> TFTP factory
# file -> DNS of the option-66 name -> HTTPS profile with the phone's own client
# certificate -> firmware by two Range requests -> syslog), from one process
# (bench/fleet, `provbox-fleet`), against provbox and then against dnsmasq (DHCP, DNS,
# TFTP) + nginx (HTTPS, ssl_verify_client on), configured the same way, simulator
# unchanged. Everything runs in two network namespaces this script creates and always
# deletes:
#
#   fleet-<pid>-s  veth0 198.18.0.1/24   the server(s), standard ports; pool routed via .2
#   fleet-<pid>-c  veth0 198.18.0.2/24   the simulator: DHCP relay (giaddr 198.18.64.1) and
#                                        every phone's leased address (AnyIP: local route
#                                        for 198.18.64.0/18 on lo)
#
#   bench/fleet.sh                           the default: ladder 1000 5000 10000, then 50/s for 60 s
#   bench/fleet.sh 1000 5000 10000           ladder: N phones at once, each rung per server
#   RATE=50 RATE_SECONDS=60 bench/fleet.sh   sustained: RATE phones/s arriving for RATE_SECONDS
#   RATE=0 bench/fleet.sh 1000               ladder only (RATE=0 skips the sustained run)
#   bench/fleet.sh none                      sustained run only
#   PERF_RECORD=1 bench/fleet.sh 10000       also `perf record` provbox during its runs
#                                            (bench/out/.../<run>-provbox.perf.data)
#
# Prints one table (ok/failed, wall, phones/s, server CPU s per 1,000 phones, peak RSS,
# boot p50/p99), the provbox/pair ratios, and per run a step-by-step table (p50/p95/p99 of
# each step for both servers, failures by step); writes per-run reports and one SVG per run
# with both servers' phones completed over time to bench/out/fleet-<time>/ (gitignored).
# Release builds.
# Needs root (namespaces), ip, curl; installs dnsmasq-base and nginx if missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RATE="${RATE:-50}"
RATE_SECONDS="${RATE_SECONDS:-${DURATION:-60}}"
FIRMWARE_KIB="${FIRMWARE_KIB:-64}"
STEP_TIMEOUT="${STEP_TIMEOUT:-120}"
PROFILE="${PROFILE:-release}"   # dev: quick smoke runs of the script itself
LADDER=("$@")
[ ${#LADDER[@]} -gt 0 ] || LADDER=(1000 5000 10000)
[ "${LADDER[*]}" = none ] && LADDER=()

[ "$(id -u)" = 0 ] || { echo "fleet.sh needs root (network namespaces)"; exit 2; }
need=()
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    # dnsmasq-base: the binary without a system service answering DNS on the host.
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]/nginx-light/nginx}"
fi

echo "building ($PROFILE)..." >&2
[ "${NO_BUILD:-0}" = 1 ] || (cd "$REPO" && nice cargo build --profile "$PROFILE" -q -p provbox -p provbox-fleet)
BIN="$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
PROVBOX="${PROVBOX:-$BIN/provbox}"
SIM="${SIM:-$BIN/provbox-fleet}"
SERVERS="${SERVERS:-provbox pair}"   # SERVERS=provbox: provbox only (e.g. while profiling)

OUT="$REPO/bench/out/fleet-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
W="$(mktemp -d /tmp/fleet-bench.XXXXXX)"
chmod 755 "$W"
S="fleet-$$-s"
C="fleet-$$-c"
SERVER_PIDS=()

stop_servers() {
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
}
cleanup() {
    stop_servers
    for ns in "$S" "$C"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

lan_pair "$S" "$C" 198.18.0.1/24 198.18.0.2/24
ip -n "$S" route add 198.18.64.0/18 via 198.18.0.2
ip -n "$C" route add local 198.18.64.0/18 dev lo
# Room for a storm: accept queues and neighbour entries.
ip netns exec "$S" sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

MAX=0
for n in "${LADDER[@]}"; do [ "$n" -gt "$MAX" ] && MAX=$n || true; done
[ "$RATE" != 0 ] && [ $((RATE * RATE_SECONDS)) -gt "$MAX" ] && MAX=$((RATE * RATE_SECONDS))
"$SIM" setup --dir "$W" --phones "$MAX" --firmware-kib "$FIRMWARE_KIB"

# provbox: the configuration tests/suite/fleet.rs uses, warnings only.
{ echo "log: {level: warn}"; cat "$REPO/bench/fleet/provbox.yaml"; } > "$W/config.yaml"

# dnsmasq: the same pool (relayed), options 3/6/66, the name, the factory files over TFTP.
cat > "$W/dnsmasq.conf" <<EOF
keep-in-foreground
user=root
interface=veth0
bind-interfaces
no-resolv
no-hosts
host-record=prov.lab.test,198.18.0.1
dhcp-range=198.18.64.10,198.18.127.250,255.255.192.0,1h
dhcp-option=3,198.18.64.1
dhcp-option=6,198.18.0.1
dhcp-option=66,"prov.lab.test"
dhcp-authoritative
dhcp-lease-max=1000000
dhcp-leasefile=$W/dnsmasq.leases
no-ping
quiet-dhcp
enable-tftp
tftp-root=$W/www
tftp-max=50000
dns-forward-max=10000
cache-size=10000
log-facility=$W/dnsmasq.log
EOF

# nginx: HTTPS with required client certificates from the same CA, pre-rendered profiles,
# each only to the certificate naming its MAC (as provbox's device layer does).
mkdir -p "$W/nginx-tmp"
cat > "$W/nginx.conf" <<EOF
user root;
worker_processes auto;
worker_rlimit_nofile 1048576;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
# Connections per worker sized to the run: nginx touches the whole table at start.
events { worker_connections $((MAX + 1024)); multi_accept on; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000;
    default_type application/octet-stream;
    client_body_temp_path $W/nginx-tmp/body;
    proxy_temp_path $W/nginx-tmp/proxy;
    fastcgi_temp_path $W/nginx-tmp/fastcgi;
    uwsgi_temp_path $W/nginx-tmp/uwsgi;
    scgi_temp_path $W/nginx-tmp/scgi;
    map "\$ssl_client_s_dn:\$uri" \$own_profile {
        "~*CN=SEP([0-9a-f]{12})(,.*)?:/cfg/\\1\\.xml\$" 1;
        default 0;
    }
    server {
        listen 443 ssl backlog=65535;
        server_name prov.lab.test;
        ssl_certificate $W/pki/server.pem;
        ssl_certificate_key $W/pki/server.key;
        ssl_client_certificate $W/pki/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $W/www;
        location /cfg/ {
            if (\$own_profile = 0) { return 403; }
        }
    }
}
EOF

wait_port() { # proto port
    for _ in $(seq 200); do
        if ip netns exec "$S" ss -Hln"$1" "sport = :$2" | grep -q .; then return 0; fi
        sleep 0.1
    done
    echo "server never listened on $1 $2" >&2
    return 1
}

start_provbox() {
    rm -rf "$W/data"
    ip netns exec "$S" "$PROVBOX" serve --config "$W/config.yaml" >"$OUT/provbox-$1.log" 2>&1 &
    SERVER_PIDS=($!)
    wait_port t 443
    wait_port u 67
}

start_pair() {
    rm -f "$W/dnsmasq.leases"
    ip netns exec "$S" dnsmasq --conf-file="$W/dnsmasq.conf" &
    SERVER_PIDS=($!)
    ip netns exec "$S" nginx -c "$W/nginx.conf" -p "$W" &
    SERVER_PIDS+=($!)
    wait_port t 443
    wait_port u 67
}

RESULTS="$OUT/results.txt"
: >"$RESULTS"
# run <tag> <server> <phones> [rate]
run() {
    local tag="$1" server="$2" n="$3" rate="${4:-0}"
    "start_$server" "$tag"
    echo "== $server: $tag" >&2
    local label="$server" perf_pid=""
    [ "$server" = pair ] && label="dnsmasq+nginx"
    if [ "${PERF_RECORD:-0}" = 1 ] && [ "$server" = provbox ]; then
        # Where the server's CPU goes during the run (cpu-clock: this VM has no PMU).
        perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$OUT/$tag-$server.perf.data" \
            -p "$(IFS=,; echo "${SERVER_PIDS[*]}")" 2>"$OUT/$tag-$server.perf.log" &
        perf_pid=$!
    fi
    ip netns exec "$C" "$SIM" run --dir "$W" --phones "$n" --rate "$rate" \
        --step-timeout "$STEP_TIMEOUT" --pids "$(IFS=,; echo "${SERVER_PIDS[*]}")" \
        --label "$label" --svg "$OUT/$tag-$server.svg" --times "$OUT/$tag-$server.times" \
        >"$OUT/$tag-$server.txt" 2>&1 || true
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    grep -v '^FAIL' "$OUT/$tag-$server.txt" >&2 || true
    local fails
    fails=$(grep -c '^FAIL' "$OUT/$tag-$server.txt" || true)
    [ "$fails" -gt 0 ] && grep -m 5 '^FAIL' "$OUT/$tag-$server.txt" >&2 && echo "($fails FAIL lines in $OUT/$tag-$server.txt)" >&2
    local p50 p99
    p50=$(awk '$1=="boot"{print $3}' "$OUT/$tag-$server.txt")
    p99=$(awk '$1=="boot"{print $5}' "$OUT/$tag-$server.txt")
    { grep '^RESULT' "$OUT/$tag-$server.txt" || echo "RESULT label=$label phones=$n ok=0 failed=$n (simulator died)"; } | sed "s/\$/ run=$tag boot_p50_ms=$p50 boot_p99_ms=$p99/" >>"$RESULTS"
    stop_servers
}

# plot <svg> <title> <tag>: every server that ran, one line each.
plot() {
    local series=()
    [ -f "$OUT/$3-provbox.times" ] && series+=("provbox=$OUT/$3-provbox.times")
    [ -f "$OUT/$3-pair.times" ] && series+=("dnsmasq+nginx=$OUT/$3-pair.times")
    [ ${#series[@]} -gt 0 ] && "$SIM" plot --out "$1" --title "$2" "${series[@]}" || true
}

TAGS=()
for n in "${LADDER[@]}"; do
    TAGS+=("n$n")
    for server in $SERVERS; do run "n$n" "$server" "$n"; done
    plot "$OUT/n$n.svg" "$n phones at once: phones fully provisioned over time" "n$n"
done
if [ "$RATE" != 0 ]; then
    total=$((RATE * RATE_SECONDS))
    TAGS+=("rate$RATE")
    for server in $SERVERS; do run "rate$RATE" "$server" "$total" "$RATE"; done
    plot "$OUT/rate$RATE.svg" "$RATE phones/s for ${RATE_SECONDS}s: phones fully provisioned over time" "rate$RATE"
fi

echo
echo "| server | run | ok / failed | wall s | phones/s | CPU s per 1k phones | peak RSS MiB | boot p50 ms | boot p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       printf "| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n", v["label"], v["run"], v["ok"], v["failed"],
              v["wall_s"], v["phones_per_s"], v["cpu_s_per_1k"], v["peak_rss_mib"], v["boot_p50_ms"], v["boot_p99_ms"] }' "$RESULTS"
echo
awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       if (v["label"] == "provbox") { pps[v["run"]] = v["phones_per_s"]; cpu[v["run"]] = v["cpu_s_per_1k"] }
       else if (v["phones_per_s"] > 0 && v["run"] in pps)
           printf "%s: provbox/pair phones/s = %.2fx, CPU per phone = %.2fx\n", v["run"], pps[v["run"]] / v["phones_per_s"], (v["cpu_s_per_1k"] > 0 ? cpu[v["run"]] / v["cpu_s_per_1k"] : 0) }' "$RESULTS"
# Per run, each step side by side: where the time goes, for both servers.
for tag in "${TAGS[@]}"; do
    echo
    echo "$tag, per step (ms; ok = phones that completed the step):"
    echo "| step | provbox ok | p50 | p95 | p99 | dnsmasq+nginx ok | p50 | p95 | p99 |"
    echo "|---|---|---|---|---|---|---|---|---|"
    pb="$OUT/$tag-provbox.txt" pr="$OUT/$tag-pair.txt"
    [ -f "$pb" ] || pb=/dev/null
    [ -f "$pr" ] || pr=/dev/null
    awk -v pb="$pb" '{ f = (FILENAME == pb) ? 1 : 2 }
         $1 ~ /^(dhcp|tftp|dns|https|firmware|syslog|boot)$/ && NF == 5 {
             if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
             row[f, $1] = $2 " | " $3 " | " $4 " | " $5 }
         /^failures by step:/ { sub(/^failures by step: /, ""); fails[f] = $0 }
         END { for (i = 1; i <= n; i++) {
                   s = order[i]; a = row[1, s]; b = row[2, s]
                   if (a == "") a = "- | - | - | -"; if (b == "") b = "- | - | - | -"
                   printf "| %s | %s | %s |\n", s, a, b }
               printf "failures by step: provbox %s; dnsmasq+nginx %s\n", \
                   (1 in fails) ? fails[1] : "-", (2 in fails) ? fails[2] : "-" }' "$pb" "$pr"
done
echo
echo "reports and plots: $OUT"
