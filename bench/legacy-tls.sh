#!/usr/bin/env bash
# provbox's TLS doors vs nginx (OpenSSL), side by side in one run on this machine: new
# connections per second, each a full handshake plus one GET of a 4 KiB profile, as
# `openssl s_time -new` drives them (one connection at a time, like phones booting). Cases:
# old phone (TLS 1.0, RSA key exchange / DHE, CBC) on provbox's `https_legacy` door and
# nginx; modern TLS 1.2 ECDHE on both provbox doors and nginx. Same certificates for both
# servers (provbox's lab RSA and ECDSA ones), nginx with 2 workers and logging off.
# Bounded: every run lasts SECONDS (default 5), loopback only.
# Usage: bench/legacy-tls.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DUR=${1:-5}
command -v nginx >/dev/null && command -v openssl >/dev/null || {
  echo "needs nginx and openssl: apt-get install -y nginx-light openssl" >&2; exit 1; }
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/provbox"
work=$(mktemp -d)
stop_jobs_and_nginx_on_exit "$work"
mkdir -p "$work/files" "$work/nginx"
chmod 755 "$work" "$work/files"   # nginx workers run unprivileged
head -c 4096 /dev/urandom > "$work/files/small.cfg"
MODERN=$(free_port); LEGACY=$(free_port); NG=$(free_port)

{ provbox_yaml_head; cat <<YAML; } > "$work/config.yaml"
https: {enabled: true, listen: ["127.0.0.1:$MODERN"]}
https_legacy: {enabled: true, listen: ["127.0.0.1:$LEGACY"]}
YAML
"$BIN" serve --config "$work/config.yaml" 2>"$work/provbox.log" &
# provbox logs at warn (no "ready" line): readiness is the legacy port answering.
for _ in $(seq 200); do curl -sfk -o /dev/null "https://127.0.0.1:$LEGACY/small.cfg" && break; sleep 0.1; done

# RFC 7919 ffdhe2048, the group provbox uses, so DHE costs the same on both.
openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out "$work/nginx/dh.pem" 2>/dev/null
{ nginx_head "$work" 1024; cat <<NGINX; } > "$work/nginx/nginx.conf"
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NG ssl;
    root $work/files;
    ssl_certificate $work/data/tls/server-rsa.pem; ssl_certificate_key $work/data/tls/server-rsa.key;
    ssl_certificate $work/data/tls/server.pem; ssl_certificate_key $work/data/tls/server.key;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_ciphers "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-SHA:AES256-SHA:DHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0";
    ssl_prefer_server_ciphers on;
    ssl_dhparam $work/nginx/dh.pem;
    ssl_session_cache off; ssl_session_tickets off;
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
for _ in $(seq 50); do curl -sfk -o /dev/null "https://127.0.0.1:$NG/small.cfg" && break; sleep 0.1; done

run() { # port proto-flag cipher -> connections/s (full handshake + GET each)
  local t0 t1 n
  t0=$(date +%s.%N)
  n=$(OPENSSL_CONF=/dev/null openssl s_time -connect "127.0.0.1:$1" -new -time "$DUR" \
        -www /small.cfg "$2" -cipher "$3@SECLEVEL=0" 2>/dev/null \
      | awk '/connections in .* real seconds/{print $1}')
  t1=$(date +%s.%N)
  awk -v n="${n:-0}" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}'
}
printf '%-34s %14s %12s %8s\n' case provbox_conn/s nginx_conn/s ratio
row() { # label provbox-port proto cipher
  local p n
  p=$(run "$2" "$3" "$4"); n=$(run "$NG" "$3" "$4")
  awk -v l="$1" -v p="$p" -v n="$n" 'BEGIN{printf "%-34s %14s %12s %7.2fx\n", l, p, n, (n>0?p/n:0)}'
}
row "legacy TLS1.0 AES256-SHA (RSA kx)" "$LEGACY" -tls1 AES256-SHA
row "legacy TLS1.0 DHE-RSA-AES256-SHA" "$LEGACY" -tls1 DHE-RSA-AES256-SHA
row "legacy TLS1.2 ECDHE-RSA-AES128-GCM" "$LEGACY" -tls1_2 ECDHE-RSA-AES128-GCM-SHA256
row "rustls TLS1.2 ECDHE-ECDSA-AES128-GCM" "$MODERN" -tls1_2 ECDHE-ECDSA-AES128-GCM-SHA256
if grep -qiE 'error|panic' "$work/provbox.log"; then echo "provbox log:"; cat "$work/provbox.log"; fi
