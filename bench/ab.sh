#!/usr/bin/env bash
# A/B of two provbox builds on one benchmark, alternately in one sitting, each run against
# the same incumbent side by side (dns.sh: dnsmasq; dhcp.sh: Kea/dnsmasq). The machine is
# shared and noisy, so what is compared is the ratio provbox/incumbent of each run, not raw
# rates; the order flips every round so a drift in load hits both builds alike.
#   OLD=/tmp/provbox-old NEW=target/release/provbox RUNS=3 bench/ab.sh dns
#   OLD=... NEW=... RUNS=2 SERVERS="provbox kea" bench/ab.sh dhcp
# Other variables (DURATION, RATES, PERIOD, SERVERS...) pass through to the script.
# dhcp needs root (network namespaces), like bench/dhcp.sh itself.
set -euo pipefail

BENCH=${1:?usage: OLD=bin NEW=bin [RUNS=3] bench/ab.sh dns|dhcp}
OLD=${OLD:?OLD=path to the old provbox binary}
NEW=${NEW:?NEW=path to the new provbox binary}
RUNS=${RUNS:-3}
DIR=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$(mktemp -d /tmp/provbox-ab.XXXXXX)}
case $BENCH in dns | dhcp) ;; *) echo "unknown benchmark $BENCH (dns or dhcp)" >&2; exit 2 ;; esac
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }; done

# One line per run: "build run load1 <metrics...>".
summary() { # build file
  case $BENCH in
    dns) # the provbox rows carry the qps ratio provbox/dnsmasq in their last column
      awk -F'|' '$3 ~ /provbox/ { gsub(/ /, "", $2); gsub(/ /, "", $4); gsub(/ /, "", $7); r[$2] = $7; q[$2] = $4 }
        END { printf "udp %s qps ratio %s  tcp %s qps ratio %s", q["udp"], r["udp"], q["tcp"], r["tcp"] }' "$2" ;;
    dhcp) # summary table after the ladder: server leases/s at drops ratio(provbox/server) cpu...
      awk '/^server +leases\/s/ { t = 1; next }
        t && NF >= 5 && $1 != "cpu:" && $1 != "the" { printf "%s %s/s (provbox/%s %s)  ", $1, $2, $1, $5 }' "$2" ;;
  esac
}

results=()
for run in $(seq 1 "$RUNS"); do
  order="old new"
  [ $((run % 2)) = 0 ] && order="new old"
  for build in $order; do
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    f="$OUT/$BENCH-$build-$run.txt"
    echo "== $BENCH run $run $build ($bin), load $load" >&2
    PROVBOX=$bin PROVBOX_BIN=$bin bash "$DIR/$BENCH.sh" >"$f" 2>&1 || echo "   exit $? (see $f)" >&2
    cat "$f" >&2
    results+=("$run $build load[$load] $(summary "$build" "$f")")
  done
done

echo
echo "$BENCH: $RUNS rounds, old=$OLD new=$NEW, $(nproc) cores, raw output in $OUT"
printf '%s\n' "${results[@]}"
