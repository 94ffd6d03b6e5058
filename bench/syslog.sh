#!/usr/bin/env bash
# Syslog ingest, side by side: provbox's receiver (parse, recognise, update the status book)
# against rsyslogd (imudp → omfile, the incumbent a bench would otherwise run), both fed
# the same N lines at the same pace over UDP on loopback. Prints received/loss/CPU.
#   bench/syslog.sh            (N=20000 RATE=5000 by default; bounded: N/RATE + ~10 s)
# Needs: python3, rsyslog (rsyslogd), a release build (cargo build --release -j 1).
set -euo pipefail
N=${N:-20000}
RATE=${RATE:-5000}
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/provbox}
[ -x "$BIN" ] || { echo "no release build at $BIN: cargo build --release -j 1" >&2; exit 1; }
command -v rsyslogd >/dev/null || { echo "rsyslogd missing: apt-get install rsyslog" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Sends N lines paced at RATE/s: half provisioning lines from 48 phones, half chatter.
send() {
  python3 - "$1" "$N" "$RATE" <<'PY'
import socket, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
lines = []
for i in range(n):
    mac = "000e08%06x" % (i % 48)
    if i % 2 == 0:
        what = ["-- Requesting resync http://198.18.0.1/spa504g.cfg",
                "– Successful resync http://198.18.0.1:8080/spa504g.cfg",
                "–- Resync failed: HTTP 404 Not Found"][i // 2 % 3]
        lines.append(f"<134>Nov 27 00:00:00 phone SPA504G {mac} {what}".encode())
    else:
        lines.append(f"<134>1 2026-11-27T00:00:00Z phone sip - - - SPA504G {mac} registration ok line {i}".encode())
start = time.monotonic()
for i, l in enumerate(lines):
    s.sendto(l, ("127.0.0.1", port))
    if i % 100 == 99:
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
print(f"{time.monotonic() - start:.2f}")
PY
}

# --- provbox
mkdir -p "$work/pb/files"
PU=$(free_udp_port); PM=$(free_port)
cat > "$work/pb/config.yaml" <<YAML
catalog: { roots: [files] }
metrics: { enabled: true, listen: "127.0.0.1:$PM" }
syslog: { enabled: true, listen: "127.0.0.1:$PU" }
YAML
"$BIN" serve --config "$work/pb/config.yaml" > "$work/pb/log" 2>&1 &
pb=$!; pids+=("$pb")
for _ in $(seq 100); do grep -q "provbox ready" "$work/pb/log" && break; sleep 0.1; done
c0=$(cpu_ticks "$pb")
pb_secs=$(send "$PU")
sleep 2
c1=$(cpu_ticks "$pb")
pb_rx=$(curl -s "http://127.0.0.1:$PM/metrics" | awk '/^provbox_syslog_lines_received_total/ {s+=$2} END {print s+0}')
pb_rec=$(curl -s "http://127.0.0.1:$PM/metrics" | awk '/^provbox_syslog_lines_recognised_total/ {s+=$2} END {print s+0}')

# --- rsyslogd
mkdir -p "$work/rs"
RU=$(free_udp_port)
cat > "$work/rs/rsyslog.conf" <<CONF
global(workDirectory="$work/rs")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="$RU")
*.* action(type="omfile" file="$work/rs/out.log")
CONF
rsyslogd -n -f "$work/rs/rsyslog.conf" -i "$work/rs/pid" > "$work/rs/log" 2>&1 &
rs=$!; pids+=("$rs")
for _ in $(seq 100); do ss -lun | grep -q ":$RU " && break; sleep 0.1; done
c2=$(cpu_ticks "$rs")
rs_secs=$(send "$RU")
sleep 2
c3=$(cpu_ticks "$rs")
rs_rx=$(wc -l < "$work/rs/out.log" 2>/dev/null || echo 0)

hz=$(getconf CLK_TCK)
python3 - "$N" "$pb_rx" "$((c1 - c0))" "$rs_rx" "$((c3 - c2))" "$hz" "$pb_rec" "$pb_secs" "$rs_secs" <<'PY'
import sys
n, pbr, pbt, rsr, rst, hz, rec, pbs, rss = sys.argv[1:]
n, pbr, pbt, rsr, rst, hz, rec = map(int, (n, pbr, pbt, rsr, rst, hz, rec))
def row(name, rx, ticks, secs):
    cpu = ticks / hz
    per = cpu / rx * 1e6 if rx else float("nan")
    print(f"| {name:<9} | {n:>6} | {rx:>8} | {100*(n-rx)/n:>5.1f}% | {secs:>6}s | {cpu:>6.2f} | {per:>9.1f} |")
    return per
print(f"syslog ingest over UDP loopback, {n} lines paced at the same rate; provbox recognised {rec} provisioning lines")
print("| server    |   sent | received |  loss  |  send  | CPU s  | CPU µs/line |")
print("|-----------|--------|----------|--------|--------|--------|-------------|")
a = row("provbox", pbr, pbt, pbs)
b = row("rsyslogd", rsr, rst, rss)
if b == b and b > 0:
    print(f"CPU per line, provbox / rsyslogd: {a/b:.2f}x")
PY
