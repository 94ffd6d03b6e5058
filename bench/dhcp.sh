#!/usr/bin/env bash
# DHCPv4 lease rate: provbox vs dnsmasq vs Kea (memfile, single- and multi-threaded),
# driven by Kea's perfdhcp.
#
# Every server runs in its own fresh state inside a network namespace made here (veth
# pair, 198.18.0.0/16, no default route; removed on exit), with the same 64000-address
# pool. perfdhcp runs in a second namespace as a relay agent (giaddr = 198.18.0.2) doing
# full DORA exchanges with random client MACs at a fixed offered rate for PERIOD seconds.
# For each server the offered rate climbs until the exchanges lose >= 1 % (DISCOVER-OFFER
# or REQUEST-ACK); the score is the best completed 4-way exchanges per second (leases/s)
# seen with < 1 % drops. Next to it, each server's CPU time per 1000 leases at the same
# offered rate as provbox: on a shared, noisy machine the cost of a lease is steadier
# than its top rate.
#
# Durability as each server ships it: provbox appends every ACK to its lease journal and
# fdatasyncs before sending it (group commit); dnsmasq rewrites its lease file (no fsync
# per lease); Kea memfile appends to its CSV (no fsync per lease). `kea` is Kea as it
# ships (single-threaded in 2.2), `kea-mt` the same with its multi-threading on, one
# thread per core.
#
# Needs root, perfdhcp (apt: kea-admin), kea-dhcp4 (kea-dhcp4-server), dnsmasq, and a
# release build: cargo build --release -j 1.
#   bench/dhcp.sh                      # all four
#   SERVERS="provbox kea-mt" bench/dhcp.sh
#   RATES="500 1000" PERIOD=3 bench/dhcp.sh
#   SERVERS="provbox provbox-pg kea-pg" bench/dhcp.sh
#   KEEP=1 bench/dhcp.sh               # keep the work dir (logs, perfdhcp output)
#
# Shared store (issue 14): `provbox-pg` is provbox with `store.backend: postgres`, `kea-pg`
# Kea with its PostgreSQL lease backend, both on one throw-away PostgreSQL 15 cluster
# (Debian's `postgresql`; initdb + pg_ctl as nobody, inside the server namespace on
# 127.0.0.1, on disk, fsync and synchronous_commit on as shipped), a fresh database per step.
# Their cpu column counts the DHCP server only, not PostgreSQL's backends.
# `provbox-pg2` is two boxes sharing that database and one pool: box A in the server
# namespace, box B in a second one (its own veth to its own perfdhcp, the same 198.18.0.1 /
# giaddr 198.18.0.2 addressing, and a 198.19.0.0/24 link to the database). Each box gets half
# the offered rate from its own perfdhcp (client MACs from disjoint bases); the row sums both.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BIN=${PROVBOX:-${PROVBOX_BIN:-$TARGET/release/provbox}}
RATES=${RATES:-"100 250 500 1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 11000 12000 14000"}
PERIOD=${PERIOD:-5}
SERVERS=${SERVERS:-"provbox dnsmasq kea kea-mt"}
S=pbxb$$s
C=pbxb$$c
S2=pbxb$$t # provbox-pg2's second box and its client
C2=pbxb$$d
# On disk (not tmpfs), so fsync costs what it costs.
WORK=$(mktemp -d -p /var/tmp provbox-bench-dhcp.XXXXXX)
SPID=
SPID2=
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_UP=

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for p in perfdhcp ip; do
  command -v "$p" >/dev/null || { echo "missing $p (apt-get install kea-admin iproute2)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no release build at $BIN (cargo build --release -j 1)" >&2; exit 1; }

stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_server() {
  if [ -n "$SPID" ]; then stop_pid "$SPID"; SPID=; fi
  if [ -n "$SPID2" ]; then stop_pid "$SPID2"; SPID2=; fi
}
cleanup() {
  stop_server
  if [ -n "$PG_UP" ]; then as_nobody "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$S2" 2>/dev/null || true
  ip netns del "$C2" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

lan_pair "$S" "$C" 198.18.0.1/16 198.18.0.2/16
TWO=
if [[ " $SERVERS " == *" provbox-pg2 "* ]]; then
  TWO=1
  lan_pair "$S2" "$C2" 198.18.0.1/16 198.18.0.2/16
  veth_link "$S" "$S2" vdb 198.19.0.1/24 198.19.0.2/24
fi

# PostgreSQL as nobody (it refuses root), inside the server namespace.
as_nobody() { ip netns exec "$S" setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
pg_sql() { # db psql-args...
  local db=$1; shift
  PGOPTIONS=--client-min-messages=warning as_nobody "$PGBIN/psql" -h 127.0.0.1 -p 5432 -U postgres -d "$db" -v ON_ERROR_STOP=1 -qAt "$@"
}
pg_up() {
  [ -n "$PG_UP" ] && return 0
  [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL 15 not installed (apt-get install postgresql)" >&2; return 1; }
  chmod 711 "$WORK"
  mkdir -p "$WORK/pg"; chown nobody:nogroup "$WORK/pg"
  as_nobody "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -E UTF8 >"$WORK/pg/initdb.log" 2>&1 \
    || { cat "$WORK/pg/initdb.log" >&2; return 1; }
  local hosts=127.0.0.1
  if [ -n "$TWO" ]; then
    hosts=127.0.0.1,198.19.0.1
    echo "host all all 198.19.0.0/24 trust" >>"$WORK/pg/data/pg_hba.conf"
  fi
  PG_UP=1
  as_nobody "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -t 60 \
    -o "-h $hosts -p 5432 -k $WORK/pg -c max_connections=100" start >/dev/null \
    || { cat "$WORK/pg/log" >&2; return 1; }
}
pg_fresh_db() { # name: drop it, create it empty
  pg_sql postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}

POOL_FIRST=198.18.1.0
POOL_LAST=198.18.250.255
POOL_SIZE=64000

start_server() { # name -> sets SPID, waits until it listens on udp/67
  local name=$1 d="$WORK/$1"
  rm -rf "$d"; mkdir -p "$d/files"
  case $name in
    provbox | provbox-pg | provbox-pg2)
      local store=
      if [ "$name" != provbox ]; then
        pg_up && pg_fresh_db provbox || return 1
        store="store: {backend: postgres, url: \"host=127.0.0.1 port=5432 user=postgres dbname=provbox\", box_name: a}"
      fi
      cat >"$d/config.yaml" <<EOF
data_dir: data
log: {level: warn}
catalog: {roots: [files]}
dhcp:
  enabled: true
  interfaces: [veth0]
  rate_limit_per_mac: 1000
  subnets:
    - subnet: 198.18.0.0/16
      pools: ["$POOL_FIRST-$POOL_LAST"]
      lease_time: 1h
$store
EOF
      PROVBOX_LOG=warn ip netns exec "$S" "$BIN" serve --config "$d/config.yaml" >"$d/log" 2>&1 &
      SPID=$!
      if [ "$name" = provbox-pg2 ]; then
        # Box B: the same config but its own data_dir, reaching the database over vdb.
        # After box A is up, so A has applied the migrations.
        wait_udp67 "$S" "$SPID" || { echo "$name box a did not start:" >&2; cat "$d/log" >&2; return 1; }
        mkdir -p "$d/b/files"
        sed -e 's/host=127.0.0.1/host=198.19.0.1/' -e 's/box_name: a/box_name: b/' \
          "$d/config.yaml" >"$d/b/config.yaml"
        (cd "$d/b" && PROVBOX_LOG=warn exec ip netns exec "$S2" "$BIN" serve --config "$d/b/config.yaml" >"$d/b/log" 2>&1) &
        SPID2=$!
        # Box A takes its half of the pool at its next heartbeat (every 2 s).
        wait_udp67 "$S2" "$SPID2" && sleep 3 && return 0
        echo "$name box b did not start:" >&2; cat "$d/b/log" >&2
        return 1
      fi
      ;;
    dnsmasq)
      ip netns exec "$S" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
        --interface=veth0 --dhcp-authoritative --no-ping --quiet-dhcp \
        --dhcp-range=$POOL_FIRST,$POOL_LAST,255.255.0.0,1h --dhcp-lease-max=200000 \
        --dhcp-leasefile="$d/leases" --log-facility="$d/log" >"$d/out" 2>&1 &
      SPID=$!
      ;;
    kea | kea-mt | kea-pg)
      # kea-mt: Kea's multi-threaded packet processing (off by default in Kea 2.2), one
      # thread per core, as provbox uses its cores.
      local mt='"multi-threading": { "enable-multi-threading": false },'
      local db="\"type\": \"memfile\", \"persist\": true, \"lfc-interval\": 0, \"name\": \"$d/leases.csv\""
      if [ "$name" = kea-pg ]; then
        pg_up && pg_fresh_db kea || return 1
        pg_sql kea -f /usr/share/kea/scripts/pgsql/dhcpdb_create.pgsql >/dev/null || return 1
        db='"type": "postgresql", "name": "kea", "host": "127.0.0.1", "port": 5432, "user": "postgres"'
      fi
      [ "$name" = kea-mt ] && mt="\"multi-threading\": { \"enable-multi-threading\": true, \"thread-pool-size\": $(nproc), \"packet-queue-size\": 64 },"
      cat >"$d/kea.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": ["veth0"], "dhcp-socket-type": "udp" },
  "lease-database": { $db },
  "valid-lifetime": 3600,
  $mt
  "subnet4": [ { "id": 1, "subnet": "198.18.0.0/16",
                 "pools": [ { "pool": "$POOL_FIRST - $POOL_LAST" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                 "output_options": [ { "output": "$d/log" } ] } ] } }
EOF
      KEA_PIDFILE_DIR=$d KEA_LOCKFILE_DIR=$d ip netns exec "$S" kea-dhcp4 -c "$d/kea.json" >"$d/out" 2>&1 &
      SPID=$!
      ;;
  esac
  wait_udp67 "$S" "$SPID" && return 0
  echo "$name did not start:" >&2; cat "$d"/log "$d"/out 2>/dev/null >&2 || true
  return 1
}
wait_udp67() { # netns pid
  for _ in $(seq 100); do
    if ip netns exec "$1" ss -lun 2>/dev/null | grep -q ':67 '; then sleep 0.3; return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# CPU time (user + system, all threads) the server has used so far, in clock ticks.
HZ=$(getconf CLK_TCK)
cpu_ticks() {
  local t=0 p
  for p in $SPID $SPID2; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}

# perfdhcp at one offered rate: prints "leases_per_s do_drop_pct ra_drop_pct acks"
# (provbox-pg2: two perfdhcp at half the rate each, one per box, summed.)
run_rate() {
  local rate=$1 out
  if [ -n "$SPID2" ]; then
    local half=$(((rate + 1) / 2))
    timeout $((PERIOD + 20)) ip netns exec "$C2" perfdhcp -4 -l veth0 -r "$half" -b mac=00:0c:02:00:00:00 \
      -R 1000000 -p "$PERIOD" -W 1000000 -d 1 198.18.0.1 >"$WORK/perfdhcp-b.txt" 2>&1 &
    local pb=$!
    out=$(timeout $((PERIOD + 20)) ip netns exec "$C" perfdhcp -4 -l veth0 -r "$half" -b mac=00:0c:01:00:00:00 \
          -R 1000000 -p "$PERIOD" -W 1000000 -d 1 198.18.0.1 2>&1 || true)
    wait "$pb" || true
    out="$out
$(cat "$WORK/perfdhcp-b.txt")"
  else
    out=$(timeout $((PERIOD + 20)) ip netns exec "$C" perfdhcp -4 -l veth0 -r "$rate" \
          -R 1000000 -p "$PERIOD" -W 1000000 -d 1 198.18.0.1 2>&1 || true)
  fi
  echo "$out" >"$WORK/perfdhcp-last.txt"
  awk '
    /^Rate:/ { rate+=$2 }
    /Statistics for: DISCOVER-OFFER/ { sec="do" }
    /Statistics for: REQUEST-ACK/ { sec="ra" }
    /^sent packets:/ { sent[sec]+=$3 }
    /^received packets:/ { recv[sec]+=$3 }
    END {
      d1 = sent["do"] ? 100*(sent["do"]-recv["do"])/sent["do"] : 100
      d2 = sent["ra"] ? 100*(sent["ra"]-recv["ra"])/sent["ra"] : 100
      printf "%s %.2f %.2f %d\n", (rate==""?0:rate), d1, d2, recv["ra"]
    }' <<<"$out"
}

declare -A BEST BEST_AT BEST_DROP CPU_AT
printf "%-8s %8s %10s %9s %9s %8s %9s\n" server offered leases/s do_drop% ra_drop% acks cpu_ms/1k
for srv in $SERVERS; do
  if [ "$srv" = dnsmasq ] && ! command -v dnsmasq >/dev/null; then echo "skip dnsmasq (not installed)"; continue; fi
  if [ "${srv%%-*}" = kea ] && ! command -v kea-dhcp4 >/dev/null; then echo "skip $srv (not installed)"; continue; fi
  BEST[$srv]=0; BEST_AT[$srv]=-; BEST_DROP[$srv]=-
  for rate in $RATES; do
    # Fresh state per step: the pool never runs dry (PERIOD x rate < POOL_SIZE).
    start_server "$srv"
    t0=$(cpu_ticks)
    read -r got d1 d2 acks < <(run_rate "$rate")
    cpu=$(awk -v a="$t0" -v b="$(cpu_ticks)" -v n="$acks" -v hz="$HZ" \
          'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1000 / hz * 1000 / n; else print "-" }')
    stop_server
    printf "%-8s %8s %10s %9s %9s %8s %9s\n" "$srv" "$rate" "$got" "$d1" "$d2" "$acks" "$cpu"
    ok=$(awk -v a="$d1" -v b="$d2" 'BEGIN { print (a < 1 && b < 1) ? 1 : 0 }')
    if [ "$ok" = 1 ]; then
      CPU_AT[$srv@$rate]=$cpu
      if awk -v g="$got" -v b="${BEST[$srv]}" 'BEGIN { exit !(g > b) }'; then
        BEST[$srv]=$got; BEST_AT[$srv]=$rate; BEST_DROP[$srv]="$d1/$d2"
      fi
    else
      break # drops >= 1 %: higher offered rates only lose more
    fi
  done
done

echo
echo "pool $POOL_SIZE addresses, ${PERIOD}s per step, perfdhcp relay mode, random MACs"
ref=${BEST[provbox]:-0}
printf "%-8s %12s %12s %14s %18s %26s\n" server "leases/s" "at offered" "drops DO/RA %" "provbox / server" "cpu ms/1k leases vs provbox"
for srv in $SERVERS; do
  [ -n "${BEST[$srv]:-}" ] || continue
  ratio=$(awk -v a="$ref" -v b="${BEST[$srv]}" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else print "-" }')
  # CPU per lease at the highest offered rate both this server and provbox served cleanly.
  cpu=-
  for rate in $RATES; do
    a=${CPU_AT[provbox@$rate]:-}; b=${CPU_AT[$srv@$rate]:-}
    [ -n "$a" ] && [ -n "$b" ] && cpu="$b vs $a at $rate/s"
  done
  printf "%-8s %12s %12s %14s %18s %26s\n" "$srv" "${BEST[$srv]}" "${BEST_AT[$srv]}" \
    "${BEST_DROP[$srv]}" "$ratio" "$cpu"
done
echo "cpu: the server's CPU time (user + system, all threads) per 1000 completed leases, at"
echo "the highest offered rate that both it and provbox served with < 1 % drops."
