# Shared by the bench scripts (sourced, not run): where the build is, free loopback ports,
# background servers stopped on exit, network namespaces joined by veth pairs, the parts of
# a provbox and an nginx configuration every side-by-side run starts from.
#   . "$(dirname "$0")/lib.sh"

# REPO (this checkout) and TARGET (cargo's target directory, CARGO_TARGET_DIR if set).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

# A TCP (free_port) or UDP (free_udp_port) port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Background servers: add each one's pid to PIDS; stop_pids kills them all and waits.
PIDS=()
stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
# remove_on_exit <dir>: on exit, stop every server in PIDS, then remove the work directory.
remove_on_exit() {
    BENCH_WORK=$1
    trap 'stop_pids; rm -rf "$BENCH_WORK"' EXIT
}

# veth_link <ns-a> <ns-b> <name> <addr-a/len> <addr-b/len>: a veth pair called <name> in
# both namespaces, addressed and up.
veth_link() {
    ip -n "$1" link add "$3" type veth peer name "$3" netns "$2"
    ip -n "$1" addr add "$4" dev "$3"
    ip -n "$2" addr add "$5" dev "$3"
    ip -n "$1" link set "$3" up
    ip -n "$2" link set "$3" up
}
# lan_pair <server-ns> <client-ns> <server-addr/len> <client-addr/len>: two new namespaces
# (loopback up) on one link, veth0 in each.
lan_pair() {
    local ns
    for ns in "$1" "$2"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    veth_link "$1" "$2" veth0 "$3" "$4"
}

# The head of a loopback provbox configuration: data under the work directory, warnings
# only, files served from files/.
provbox_yaml_head() {
    printf '%s\n' "data_dir: data" "log: {level: warn}" "catalog: {roots: [files]}"
}

# nginx_head <work> <worker-connections>: nginx's main and events sections (two workers,
# pid in <work>, warnings to <work>/nginx/error.log) and the http section's opening lines
# (no access log, every temp path in <work>/nginx); the caller adds the rest and the "}".
nginx_head() {
    cat <<NGINX
worker_processes 2;
pid $1/nginx.pid;
error_log $1/nginx/error.log warn;
events { worker_connections $2; }
http {
  access_log off;
  client_body_temp_path $1/nginx; proxy_temp_path $1/nginx; fastcgi_temp_path $1/nginx;
  uwsgi_temp_path $1/nginx; scgi_temp_path $1/nginx;
NGINX
}
# The trap of a script that runs provbox and an nginx (pid in <work>/nginx.pid) in <work>.
stop_jobs_and_nginx_on_exit() {
    BENCH_WORK=$1
    trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$BENCH_WORK/nginx.pid" ] && kill "$(cat "$BENCH_WORK/nginx.pid")" 2>/dev/null; rm -rf "$BENCH_WORK"' EXIT
}
