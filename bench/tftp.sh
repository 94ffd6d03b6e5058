#!/usr/bin/env bash
# TFTP benchmark: provbox (release build) against tftpd-hpa (in.tftpd, run by hand) and
# dnsmasq's TFTP, same files and clients, in one run, inside a private network namespace
# (its loopback only; dnsmasq's TFTP port is fixed at 69, which the namespace makes safe).
#
#   (a) one 40 MiB transfer with atftp: blksize 1468, then blksize 1468 + windowsize 16
#       (median of 5 interleaved runs each, MiB/s; every run printed)
#   (b) boot storm: 300 tftp-hpa clients at once, each fetching the same 256 KiB file:
#       wall time, failures (missing or differing bytes), server peak RSS (VmHWM)
#
# Needs root (netns), atftp, tftp-hpa, tftpd-hpa, dnsmasq. Everything is bounded: every
# client runs under `timeout`, servers are killed and the namespace removed on exit.
#   CARGO_TARGET_DIR=/work/targets/tftp bash bench/tftp.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PROVBOX="${PROVBOX:-$TARGET/release/provbox}"
STORM="${STORM:-300}"
RUNS="${RUNS:-5}"

if [ -z "${TFTP_BENCH_IN_NS:-}" ]; then
    for p in atftp tftp in.tftpd dnsmasq ip; do
        command -v "$p" >/dev/null || { echo "missing $p (apt-get install -y atftp tftp-hpa tftpd-hpa dnsmasq-base iproute2)"; exit 2; }
    done
    [ -x "$PROVBOX" ] || { echo "no release build at $PROVBOX: cargo build --release -j 1"; exit 2; }
    NS="pbtftp-$$"
    ip netns add "$NS"
    trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
    ip netns exec "$NS" ip link set lo up
    # in.tftpd resolves its -a address with AI_ADDRCONFIG, which finds nothing in a
    # namespace that has only loopback addresses: give lo one more (test range).
    ip netns exec "$NS" ip addr add 198.18.0.1/32 dev lo
    TFTP_BENCH_IN_NS=1 PROVBOX="$PROVBOX" timeout 900 ip netns exec "$NS" bash "$0" "$@"
    exit $?
fi

W="$(mktemp -d /tmp/tftp-bench.XXXXXX)"
chmod 755 "$W"
remove_on_exit "$W"

mkdir -p "$W/files" "$W/out"
head -c $((40 << 20)) /dev/urandom > "$W/files/big.bin"
head -c $((256 << 10)) /dev/urandom > "$W/files/storm.bin"
chmod -R a+rX "$W/files"

# --- servers -------------------------------------------------------------------------
P_PROV=6969
P_HPA=7069
P_DNSMASQ=69
cat > "$W/provbox.yaml" <<EOF
data_dir: $W/data
log:
  level: warn
catalog:
  roots: [$W/files]
tftp:
  enabled: true
  listen: 0.0.0.0:$P_PROV
  max_transfers: 1000
  # All 300 storm clients share one address (127.0.0.1). The per-address cap (default 8)
  # is for a LAN where each phone has its own; left on, it would refuse 292 of them, which
  # tftpd-hpa and dnsmasq (no such cap) would not, so it is lifted to the global limit.
  max_transfers_per_ip: 1000
EOF
"$PROVBOX" serve --config "$W/provbox.yaml" > "$W/provbox.log" 2>&1 &
PROV_PID=$!
PIDS+=("$PROV_PID")
# tftpd-hpa in the foreground (-L), chrooted to the files (-s), as nobody.
in.tftpd -L -a 127.0.0.1:$P_HPA -s "$W/files" > "$W/hpa.log" 2>&1 &
PIDS+=("$!")
dnsmasq --keep-in-foreground --port=0 --no-resolv --no-hosts --conf-file=/dev/null \
    --listen-address=127.0.0.1 --bind-interfaces --enable-tftp --tftp-root="$W/files" \
    --tftp-max=1000 --user=root --pid-file="$W/dnsmasq.pid" --log-facility="$W/dnsmasq.log" &
DNSMASQ_PID=$!
PIDS+=("$DNSMASQ_PID")
sleep 1
for i in $(seq 50); do
    grep -q "provbox ready" "$W/provbox.log" 2>/dev/null && break
    sleep 0.1
done

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# --- (a) one 40 MiB transfer ---------------------------------------------------------
# $1 port, rest: atftp options. Prints MiB/s (0 when the bytes differ or it failed).
one() {
    local port=$1; shift
    rm -f "$W/out/big.bin"
    local t0 t1
    t0=$(now)
    timeout 120 atftp "$@" -g -r big.bin -l "$W/out/big.bin" 127.0.0.1 "$port" >/dev/null 2>&1 || true
    t1=$(now)
    if cmp -s "$W/out/big.bin" "$W/files/big.bin"; then
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", 40 / (b - a) }'
    else
        echo 0
    fi
}
# Runs are interleaved across servers (provbox, hpa, dnsmasq, provbox, ...) so load
# from other processes on this shared machine falls on all of them alike.
declare -A R1 R16
for _ in $(seq "$RUNS"); do
    for s in provbox hpa dnsmasq; do
        case $s in provbox) p=$P_PROV ;; hpa) p=$P_HPA ;; dnsmasq) p=$P_DNSMASQ ;; esac
        R1[$s]+="$(one "$p" --option "blksize 1468") "
        R16[$s]+="$(one "$p" --option "blksize 1468" --option "windowsize 16") "
    done
done
declare -A A1 A16
for s in provbox hpa dnsmasq; do
    A1[$s]=$(echo "${R1[$s]}" | tr ' ' '\n' | grep . | median)
    A16[$s]=$(echo "${R16[$s]}" | tr ' ' '\n' | grep . | median)
done

# --- (b) boot storm ------------------------------------------------------------------
declare -A WALL FAIL
storm() {
    local port=$1 name=$2
    rm -rf "$W/out/$name"; mkdir -p "$W/out/$name"
    local t0 t1
    t0=$(now)
    for i in $(seq "$STORM"); do
        timeout 60 tftp 127.0.0.1 "$port" -m octet -c get storm.bin "$W/out/$name/$i" >/dev/null 2>&1 &
    done
    wait_clients
    t1=$(now)
    local fail=0
    for i in $(seq "$STORM"); do
        cmp -s "$W/out/$name/$i" "$W/files/storm.bin" || fail=$((fail + 1))
    done
    WALL[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }')
    FAIL[$name]=$fail
}
# Wait for the storm's clients only (the servers are background jobs too).
wait_clients() {
    local j
    for j in $(jobs -p); do
        case " ${PIDS[*]} " in *" $j "*) ;; *) wait "$j" 2>/dev/null || true ;; esac
    done
}
storm $P_PROV provbox
storm $P_HPA hpa
storm $P_DNSMASQ dnsmasq

hwm() { awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
PROV_RSS=$(hwm "$PROV_PID")
# VmHWM counts the catalog's mmapped snapshots (file pages shared with the page cache)
# too; the anonymous part is what transfers themselves allocate.
PROV_SPLIT=$(awk '/RssAnon|RssFile/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$PROV_PID/status" 2>/dev/null || true)
DNSMASQ_RSS=$(hwm "$DNSMASQ_PID")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

echo
echo "TFTP benchmark: 40 MiB file (median of $RUNS), storm of $STORM x 256 KiB; $(nproc) cores; $(date -u +%FT%TZ)"
printf '%-34s %12s %12s %12s %14s %14s\n' "" provbox tftpd-hpa dnsmasq "provbox/hpa" "provbox/dnsmasq"
printf '%-34s %12s %12s %12s %14s %14s\n' "(a) atftp blksize 1468, MiB/s" "${A1[provbox]}" "${A1[hpa]}" "${A1[dnsmasq]}" \
    "$(ratio "${A1[provbox]}" "${A1[hpa]}")" "$(ratio "${A1[provbox]}" "${A1[dnsmasq]}")"
printf '%-34s %12s %12s %12s %14s %14s\n' "(a) + windowsize 16, MiB/s" "${A16[provbox]}" "${A16[hpa]}" "${A16[dnsmasq]}" \
    "$(ratio "${A16[provbox]}" "${A16[hpa]}")" "$(ratio "${A16[provbox]}" "${A16[dnsmasq]}")"
printf '%-34s %12s %12s %12s %14s %14s\n' "(b) storm wall time, s (lower wins)" "${WALL[provbox]}" "${WALL[hpa]}" "${WALL[dnsmasq]}" \
    "$(ratio "${WALL[hpa]}" "${WALL[provbox]}") faster" "$(ratio "${WALL[dnsmasq]}" "${WALL[provbox]}") faster"
printf '%-34s %12s %12s %12s\n' "(b) storm failures" "${FAIL[provbox]}" "${FAIL[hpa]}" "${FAIL[dnsmasq]}"
printf '%-34s %12s %12s %12s\n' "peak RSS (VmHWM) after all runs" "$PROV_RSS" "fork/xfer" "$DNSMASQ_RSS"
for s in provbox hpa dnsmasq; do
    printf 'runs %-8s bs1468: %-32s ws16: %s\n' "$s" "${R1[$s]}" "${R16[$s]}"
done
echo "provbox now: $PROV_SPLIT(served files: 40 MiB + 256 KiB)"
echo "(tftpd-hpa 5.2 and dnsmasq ignore windowsize: their windowsize row is lockstep at 1468)"
