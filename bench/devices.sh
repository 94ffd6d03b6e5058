#!/usr/bin/env bash
# Device-layer benchmark on loopback: what identifying the device, rendering its template
# and encrypting it cost per request, against nginx serving the same profile pre-rendered
# (what operators do today: a script writes one file per MAC, a web server serves them).
#
#   nginx     static file, pre-rendered            (the incumbent)
#   provbox   public static file                   (device layer fast path)
#   provbox   per-device template, rendered        (identify + inventory + render)
#   provbox   per-device template, AES-256 salted  (… + EVP_BytesToKey + AES-CBC)
#
# Same client (wrk, 1 thread, 16 connections, fixed duration) for each, one at a time.
# Inventory of 1000 devices. Needs wrk, nginx, curl, a release build:
#   cargo build --release -j 1 && CARGO_TARGET_DIR=/work/targets/devices bash bench/devices.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PROVBOX="${PROVBOX:-$TARGET/release/provbox}"
DUR="${DUR:-5s}"
CONNS="${CONNS:-16}"
for p in wrk nginx curl python3; do
    command -v "$p" >/dev/null || { echo "missing $p (apt-get install -y wrk nginx-light curl)"; exit 2; }
done
[ -x "$PROVBOX" ] || { echo "no release build at $PROVBOX: cargo build --release -j 1"; exit 2; }

W="$(mktemp -d /tmp/devices-bench.XXXXXX)"
chmod 755 "$W"   # nginx workers run as an unprivileged user when started by root
remove_on_exit "$W"

A=00562b043615      # plain
B=0015654aa937      # has an encryption key
UA_A="Cisco-CP-8831-3PCC/9.3.3 ($A)"
UA_B="Cisco-CP-8831-3PCC/9.3.3 ($B)"
mkdir -p "$W/files/cfg" "$W/nginx/cfg" "$W/nginx/tmp"
TEMPLATE='<flat-profile>
  <Station_Display_Name_ ua="na">$(display_name)</Station_Display_Name_>
  <User_ID_1_ ua="na">$sip_user</User_ID_1_>
  <Password_1_ ua="na">$sip_password</Password_1_>
  <Short_Name_1_ ua="na">$extension</Short_Name_1_>
  <Profile_Rule ua="na">https://prov.lab.test/cfg/$MA.xml</Profile_Rule>
  <!-- $PN $SWVER $MAC -->
'
# ~1.5 KiB: pad with fixed settings as real profiles have.
for i in $(seq 1 20); do TEMPLATE+="  <Setting_$i ua=\"na\">value-$i</Setting_$i>
"; done
TEMPLATE+='</flat-profile>
'
printf '%s' "$TEMPLATE" > "$W/files/cfg/\$MA.xml.tmpl"
{
    echo "mac,extension,sip_user,sip_password,display_name,key"
    echo "$A,1001,1001,pw-a,Reception,"
    echo "$B,1002,1002,pw-b,Office,bench key"
    for i in $(seq 3 1000); do printf '02000000%04x,%d,%d,pw-%d,Phone %d,\n' "$i" $((1000 + i)) $((1000 + i)) "$i" "$i"; done
} > "$W/inventory.csv"

HP=$(free_port); NP=$(free_port)
{ provbox_yaml_head; cat <<YAML; } > "$W/config.yaml"
http: { enabled: true, listen: ["127.0.0.1:$HP"] }
https: { enabled: false }
metrics: { enabled: false }
devices:
  inventory: inventory.csv
  trust: { user_agent: true }
YAML
"$PROVBOX" serve --config "$W/config.yaml" > "$W/provbox.log" 2>&1 &
PIDS+=($!)
code() { curl -s -o /dev/null -w '%{http_code}' -A "${2:-}" "$1" || true; }
for _ in $(seq 1 100); do [ "$(code "http://127.0.0.1:$HP/x")" = 404 ] && break; sleep 0.1; done

# The incumbent serves exactly what provbox renders for A (fetched once).
curl -fsS -A "$UA_A" -o "$W/nginx/cfg/$A.xml" "http://127.0.0.1:$HP/cfg/$A.xml"
cp "$W/nginx/cfg/$A.xml" "$W/files/static.xml"
chmod -R a+rX "$W/nginx"
cat > "$W/nginx.conf" <<NGX
daemon off;
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $W/nginx/tmp; proxy_temp_path $W/nginx/tmp;
    fastcgi_temp_path $W/nginx/tmp; uwsgi_temp_path $W/nginx/tmp; scgi_temp_path $W/nginx/tmp;
    server { listen 127.0.0.1:$NP; root $W/nginx; }
}
NGX
nginx -c "$W/nginx.conf" -p "$W/nginx" &
PIDS+=($!)
sleep 0.5
# provbox picks up static.xml via its watcher
for _ in $(seq 1 50); do [ "$(code "http://127.0.0.1:$HP/static.xml")" = 200 ] && break; sleep 0.1; done

check() { # url ua expected-status
    local got; got=$(code "$1" "$2")
    [ "$got" = "$3" ] || { echo "sanity check failed: $1 gave $got"; cat "$W/provbox.log"; exit 1; }
}
check "http://127.0.0.1:$NP/cfg/$A.xml" "$UA_A" 200
check "http://127.0.0.1:$HP/static.xml" "$UA_A" 200
check "http://127.0.0.1:$HP/cfg/$A.xml" "$UA_A" 200
check "http://127.0.0.1:$HP/cfg/$B.xml" "$UA_B" 200
check "http://127.0.0.1:$HP/cfg/$B.xml" "$UA_A" 403
curl -s -A "$UA_B" "http://127.0.0.1:$HP/cfg/$B.xml" | openssl enc -d -aes-256-cbc -md md5 -k "bench key" 2>/dev/null | grep -q "pw-b" \
    || { echo "encrypted profile does not decrypt"; exit 1; }

bench() { # url ua -> "req/s avg-latency"
    timeout 60 wrk -t1 -c"$CONNS" -d"$DUR" -H "User-Agent: $2" "$1" \
        | awk '/Requests\/sec/ {r=$2} /^ +Latency/ {l=$2} /Non-2xx/ {bad=$NF} END {print r, l, (bad?bad:0)}'
}
declare -A R
printf '%-44s %12s %10s %8s %s\n' "server / request" "req/s" "latency" "ratio" "non-2xx"
base=""
while IFS='|' read -r name url ua; do
    read -r rps lat bad < <(bench "$url" "$ua")
    [ -z "$base" ] && base=$rps
    printf '%-44s %12.0f %10s %8.2f %s\n' "$name" "$rps" "$lat" "$(python3 -c "print($rps/$base)")" "$bad"
done <<ROWS
nginx: pre-rendered static file|http://127.0.0.1:$NP/cfg/$A.xml|$UA_A
provbox: public static file|http://127.0.0.1:$HP/static.xml|$UA_A
provbox: per-device template rendered|http://127.0.0.1:$HP/cfg/$A.xml|$UA_A
provbox: per-device rendered + AES-256 (md5)|http://127.0.0.1:$HP/cfg/$B.xml|$UA_B
ROWS
echo "(wrk -t1 -c$CONNS -d$DUR on 127.0.0.1, $(nproc) cores shared by client and server; ratio vs nginx; inventory 1000 devices, profile $(stat -c %s "$W/nginx/cfg/$A.xml") bytes)"
