#!/usr/bin/env bash
# Cache-hit benchmark: media-edge vs nginx proxy_cache, same machine, same run.
#
# Serves 10 KiB / 100 KiB / 1 MiB objects (random bytes) from a warm cache and
# measures them with wrk (bounded: -t2 -c32 -d10s by default), 127.0.0.1 only.
#
#   nginx:      one nginx process (temp config, daemon off) with two servers:
#               an origin serving the object folder, and a proxy_cache server
#               in front of it.
#   media-edge: $MEDIA_EDGE_BIN run --config $TMP/me.toml --data-dir $TMP/me-data
#               with a "local" origin pointed at the same folder.
#
# At the end (unless --no-rss / --nginx-only) a fresh media-edge streams a
# 1 GiB object once with curl while we sample its memory; peak RSS (VmHWM)
# is printed in MB.
#
# Usage: scripts/bench/cache_hit.sh [--nginx-only] [--me-only] [--no-rss] [--rss-only] [-h]
#
# Environment:
#   MEDIA_EDGE_BIN  media-edge binary (default target/release/media-edge,
#                   relative paths are tried from $PWD, then the repo root)
#   WRK_THREADS     wrk threads       (default 2)
#   WRK_CONNS       wrk connections   (default 32)
#   WRK_DURATION    wrk duration      (default 10s)
#   ROUNDS          rounds of nginx-then-media-edge per size (default 3; medians reported)
#   PROTO           http (default: HTTP/1.1, wrk), https (HTTP/1.1 over TLS 1.3, wrk) or
#                   h2 (HTTP/2 over TLS, h2load -m$H2_STREAMS; latency is h2load's mean
#                   request time, it reports no percentiles). Both servers get the same
#                   self-signed certificate (openssl); nginx: `ssl` (and `http2`) on its
#                   reuseport listener, media-edge: a [[server.tls]] listener.
#   H2_STREAMS      concurrent streams per connection for h2 (default 64)
#   RSS_SIZE_MB     size of the RSS test object in MiB (default 1024)
#   RSS_FILL        sparse (default, instant) | random (urandom, slower)
#   ME_SERVER_EXTRA extra lines for media-edge's [server] table
#                   (e.g. 'work_stealing = false')
#   ME_EXTRA        extra sections for media-edge's config
#                   (e.g. $'[analytics]\nenabled = true': the request log's cost)
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw wrk output)
#   VERBOSE=1       print raw wrk output
set -euo pipefail

WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNS="${WRK_CONNS:-32}"
WRK_DURATION="${WRK_DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
RSS_SIZE_MB="${RSS_SIZE_MB:-1024}"
RSS_FILL="${RSS_FILL:-sparse}"
KEEP_TMP="${KEEP_TMP:-0}"
VERBOSE="${VERBOSE:-0}"
PROTO="${PROTO:-http}"
H2_STREAMS="${H2_STREAMS:-64}"
case "$PROTO" in http | https | h2) ;; *) echo "PROTO must be http, https or h2" >&2; exit 2 ;; esac
scheme=http
[[ "$PROTO" != http ]] && scheme=https

run_nginx=1
run_me=1
run_rss=1

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

while (($#)); do
    case "$1" in
    --nginx-only) run_me=0; run_rss=0 ;;
    --me-only) run_nginx=0; run_rss=0 ;;
    --no-rss) run_rss=0 ;;
    --rss-only) run_nginx=0; run_me=0; run_rss=1 ;;
    --rss) run_rss=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for tool in curl wrk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y $tool)"
done
if [[ "$PROTO" == h2 ]]; then
    command -v h2load >/dev/null 2>&1 || die "h2load not found (apt-get install -y nghttp2-client)"
fi
if [[ "$PROTO" != http ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install -y openssl)"
fi
if ((run_nginx)); then
    command -v nginx >/dev/null 2>&1 || die "nginx not found (apt-get install -y nginx)"
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/../.." && pwd)"

MEDIA_EDGE_BIN="${MEDIA_EDGE_BIN:-target/release/media-edge}"
if ((run_me || run_rss)); then
    if [[ "$MEDIA_EDGE_BIN" != /* && ! -e "$MEDIA_EDGE_BIN" && -e "$repo/$MEDIA_EDGE_BIN" ]]; then
        MEDIA_EDGE_BIN="$repo/$MEDIA_EDGE_BIN"
    fi
    [[ -x "$MEDIA_EDGE_BIN" ]] ||
        die "media-edge binary not found or not executable: $MEDIA_EDGE_BIN (build it, set MEDIA_EDGE_BIN, or use --nginx-only)"
fi

# ------------------------------------------------------------ temp + cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/media-edge-bench.XXXXXX")"
OBJ="$TMP/objects" # origin folder; URLs are /bench/<file>
mkdir -p "$OBJ"

nginx_pid=""
me_pid=""
curl_pid=""

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$curl_pid"
    stop_pid "$me_pid"
    stop_pid "$nginx_pid"
    if [[ "$KEEP_TMP" == 1 ]]; then
        log "kept temp dir: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ helpers
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: print an unused TCP port on 127.0.0.1 not in $used_ports.
used_ports=" "
free_port() {
    local p tries
    for ((tries = 0; tries < 200; tries++)); do
        p=$((20000 + RANDOM % 20000))
        [[ "$used_ports" == *" $p "* ]] && continue
        port_in_use "$p" && continue
        used_ports+="$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}

# wait_http URL PID NAME LOGFILE: wait (max 15 s) until URL answers anything.
wait_http() {
    local url="$1" pid="$2" name="$3" logf="$4" i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during startup; last log lines:"
            tail -n 20 "$logf" >&2 || true
            die "$name failed to start"
        fi
        if curl -sk -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$logf" >&2 || true
    die "$name did not answer on $url within 15 s"
}

# warm URL EXPECTED_SIZE NAME: fetch 3 times, check status and size.
warm() {
    local url="$1" want="$2" name="$3" i out code size
    for ((i = 0; i < 3; i++)); do
        out="$(curl -sk ${CURL_PROTO:-} -o /dev/null --max-time 30 -w '%{http_code} %{size_download}' "$url")" ||
            die "$name: curl failed for $url"
        code="${out% *}"
        size="${out#* }"
        [[ "$code" == 200 ]] || die "$name: $url returned HTTP $code"
        [[ "$size" == "$want" ]] || die "$name: $url returned $size bytes, want $want"
    done
}

# to_ms VALUE_WITH_UNIT (wrk style: 512.00us 1.23ms 1.02s 1.50m)
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000;
        printf "%.2f", n }'
}

# run_h2load NAME LABEL URL: runs h2load for $WRK_DURATION, sets WRK_RPS and WRK_P99 (its
# mean request time, ms: h2load prints no percentiles).
run_h2load() {
    local name="$1" label="$2" url="$3" out="$TMP/h2load-$1-$2.txt" secs mean
    secs="${WRK_DURATION%s}"
    log "h2load $name $label: -t$WRK_THREADS -c$WRK_CONNS -m$H2_STREAMS -D $secs $url"
    h2load -t"$WRK_THREADS" -c"$WRK_CONNS" -m"$H2_STREAMS" -D "$secs" "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "h2load failed ($name $label)"; }
    [[ "$VERBOSE" == 1 ]] && cat "$out" >&2
    grep -qi 'application protocol: h2' "$out" || { cat "$out" >&2; die "$name did not speak h2 ($label)"; }
    WRK_RPS="$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i + 1) == "req/s,") print $i}' "$out")"
    mean="$(awk '/^time for request:/ {print $6; exit}' "$out")"
    [[ -n "$WRK_RPS" && -n "$mean" ]] || { cat "$out" >&2; die "could not parse h2load output ($name $label)"; }
    WRK_P99="$(to_ms "$mean")"
    if ! grep -qE '^requests: .* 0 failed, 0 errored' "$out"; then
        log "WARNING $name $label: $(grep -E '^requests:' "$out")"
    fi
}

# run_wrk NAME LABEL URL: runs wrk (h2load for PROTO=h2), sets WRK_RPS and WRK_P99 (ms).
WRK_RPS=""
WRK_P99=""
run_wrk() {
    if [[ "$PROTO" == h2 ]]; then
        run_h2load "$@"
        return
    fi
    local name="$1" label="$2" url="$3" out="$TMP/wrk-$1-$2.txt" p99raw
    log "wrk $name $label: -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION $url"
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed ($name $label)"; }
    [[ "$VERBOSE" == 1 ]] && cat "$out" >&2
    WRK_RPS="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p99raw="$(awk '/Latency Distribution/ {d = 1} d && $1 == "99%" {print $2; exit}' "$out")"
    [[ -n "$WRK_RPS" && -n "$p99raw" ]] || { cat "$out" >&2; die "could not parse wrk output ($name $label)"; }
    WRK_P99="$(to_ms "$p99raw")"
    if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$out"; then
        log "WARNING $name $label: $(grep -E 'Non-2xx or 3xx responses|Socket errors' "$out" | tr -s ' ' | tr '\n' ';')"
    fi
}

# ------------------------------------------------------------ objects
labels=(10KB 100KB 1MB)
declare -A obj_size=([10KB]=10240 [100KB]=102400 [1MB]=1048576)
for l in "${labels[@]}"; do
    head -c "${obj_size[$l]}" /dev/urandom >"$OBJ/obj-$l.bin"
done
log "objects in $OBJ: $(find "$OBJ" -type f -printf '%f=%s ' | sort)"

declare -A ng_rps ng_p99 me_rps me_p99

# ------------------------------------------------------------ certificate (https, h2)
if [[ "$PROTO" != http ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 || die "openssl failed"
    [[ "$PROTO" == h2 ]] && CURL_PROTO=--http2
fi
# The nginx listener's TLS (and HTTP/2) parameters, and the directives that go with them.
ng_listen_tls=""
ng_tls_conf=""
if [[ "$PROTO" != http ]]; then
    ng_listen_tls=" ssl"
    [[ "$PROTO" == h2 ]] && ng_listen_tls=" ssl http2"
    ng_tls_conf="ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem; ssl_protocols TLSv1.3; ssl_session_cache shared:SSL:10m; http2_max_concurrent_streams 128;"
fi

# ------------------------------------------------------------ nginx
if ((run_nginx)); then
    ng_origin_port="$(free_port)"
    ng_cache_port="$(free_port)"
    NG="$TMP/nginx"
    mkdir -p "$NG/cache" "$NG/tmp"
    user_line=""
    if ((EUID == 0)); then
        user_line="user root;" # workers must reach the 0700 temp dir
    fi
    cat >"$NG/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
# As nginx's users tune it: one worker per core, reuseport so the kernel spreads new
# connections over the workers (without it one worker accepts most of them and nginx is
# understated at large objects), sendfile, no access log.
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    # tcp_nopush (TCP_CORK) stays off: on loopback it stalls ~40 ms per
    # response for ~100 KB cache hits (cork + delayed ACK), which would
    # understate nginx (measured: ~900 vs ~11k req/s at 100 KB).
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $NG/tmp/client;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    proxy_cache_path $NG/cache levels=1:2 keys_zone=bench:16m max_size=2g inactive=1h use_temp_path=off;

    upstream origin {
        server 127.0.0.1:$ng_origin_port;
        keepalive 16;
    }

    # origin: serves the object folder at /bench/
    server {
        listen 127.0.0.1:$ng_origin_port;
        location /bench/ { alias $OBJ/; }
    }

    # cache in front of the origin
    server {
        listen 127.0.0.1:$ng_cache_port$ng_listen_tls reuseport;
        $ng_tls_conf
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
EOF
    nginx -t -q -p "$NG/" -e "$NG/error.log" -c "$NG/nginx.conf" ||
        die "nginx config test failed ($NG/nginx.conf)"
    nginx -p "$NG/" -e "$NG/error.log" -c "$NG/nginx.conf" >"$NG/stdout.log" 2>&1 &
    nginx_pid=$!
    wait_http "$scheme://127.0.0.1:$ng_cache_port/" "$nginx_pid" nginx "$NG/error.log"
    log "nginx up (pid $nginx_pid): origin :$ng_origin_port, cache :$ng_cache_port"

    for l in "${labels[@]}"; do
        url="$scheme://127.0.0.1:$ng_cache_port/bench/obj-$l.bin"
        warm "$url" "${obj_size[$l]}" nginx
        status="$(curl -sk -o /dev/null -D - "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache-status" {print $2}')"
        [[ "$status" == HIT ]] || die "nginx: $url not a cache HIT after warming (X-Cache-Status: ${status:-none})"
    done
fi

# ------------------------------------------------------------ media-edge
# start_me NAME: write $TMP/NAME.toml, start media-edge, sets me_pid/me_port.
me_port=""
start_me() {
    local name="$1" cfg
    me_port="$(free_port)"
    # ---- media-edge config (@PORT@ and @DIR@ are substituted below) ----
    cfg="$(
        cat <<'EOF'
[server]
listen = ["127.0.0.1:@PORT@"]
threads = 2
[cache]
memory_bytes = "256MiB"
disk_bytes = "1GiB"
[[origins]]
name = "bench"
matcher = "^/bench/(.*)$"
[[origins.sources]]
kind = "local"
root = "@DIR@"
path = "$1"
EOF
    )"
    cfg="${cfg/threads = 2/threads = 2${ME_SERVER_EXTRA:+$'\n'$ME_SERVER_EXTRA}}"
    cfg="${cfg}${ME_EXTRA:+$'\n'$ME_EXTRA}"
    me_url_port="$me_port"
    if [[ "$PROTO" != http ]]; then
        me_url_port="$(free_port)"
        cfg+=$'\n'"[[server.tls]]"$'\n'"listen = \"127.0.0.1:$me_url_port\""$'\n'"cert = \"$TMP/cert.pem\""$'\n'"key = \"$TMP/key.pem\""
    fi
    cfg="${cfg//@PORT@/$me_port}"
    cfg="${cfg//@DIR@/$OBJ}"
    printf '%s\n' "$cfg" >"$TMP/$name.toml"
    mkdir -p "$TMP/$name-data"
    MEDIA_EDGE_LOG="${MEDIA_EDGE_LOG:-warn}" "$MEDIA_EDGE_BIN" run --config "$TMP/$name.toml" --data-dir "$TMP/$name-data" \
        >"$TMP/$name.log" 2>&1 &
    me_pid=$!
    wait_http "$scheme://127.0.0.1:$me_url_port/bench/obj-10KB.bin" "$me_pid" media-edge "$TMP/$name.log"
    log "media-edge up (pid $me_pid) on :$me_port, config $TMP/$name.toml"
}

if ((run_me)); then
    start_me me
    for l in "${labels[@]}"; do
        warm "$scheme://127.0.0.1:$me_url_port/bench/obj-$l.bin" "${obj_size[$l]}" media-edge
    done
fi

# ------------------------------------------------------------ rounds
# Both servers stay up (an idle one costs nothing); each round measures every size on nginx
# then on media-edge, so drift on a shared machine hits both sides alike. Medians are
# reported, and the spread of the per-round ratios.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A ng_all ng_p99_all me_all me_p99_all ratio_all
for ((round = 1; round <= ROUNDS; round++)); do
    for l in "${labels[@]}"; do
        if ((run_nginx)); then
            run_wrk nginx "$l-r$round" "$scheme://127.0.0.1:$ng_cache_port/bench/obj-$l.bin"
            ng_all[$l]+="$WRK_RPS "
            ng_p99_all[$l]+="$WRK_P99 "
            ng_last="$WRK_RPS"
        fi
        if ((run_me)); then
            run_wrk media-edge "$l-r$round" "$scheme://127.0.0.1:$me_url_port/bench/obj-$l.bin"
            me_all[$l]+="$WRK_RPS "
            me_p99_all[$l]+="$WRK_P99 "
            if ((run_nginx)); then
                ratio_all[$l]+="$(awk -v a="$WRK_RPS" -v b="$ng_last" 'BEGIN { printf "%.2f", a / b }') "
            fi
        fi
    done
done
for l in "${labels[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the space-separated lists is intended
    {
        ((run_nginx)) && ng_rps[$l]="$(median ${ng_all[$l]})" && ng_p99[$l]="$(median ${ng_p99_all[$l]})"
        ((run_me)) && me_rps[$l]="$(median ${me_all[$l]})" && me_p99[$l]="$(median ${me_p99_all[$l]})"
    }
done
# Peak RSS (VmHWM) after the rounds: media-edge's process, nginx's master and workers summed.
hwm_mb() { awk '/^VmHWM:/ {s += $2} END {printf "%.0f", s / 1024}' "$@" 2>/dev/null || echo -; }
me_hwm="-"
ng_hwm="-"
if [[ -n "$me_pid" ]]; then
    me_hwm="$(hwm_mb "/proc/$me_pid/status")"
fi
if [[ -n "$nginx_pid" ]]; then
    ng_files=("/proc/$nginx_pid/status")
    for c in $(pgrep -P "$nginx_pid" || true); do ng_files+=("/proc/$c/status"); done
    ng_hwm="$(hwm_mb "${ng_files[@]}")"
fi
stop_pid "$me_pid"
me_pid=""
stop_pid "$nginx_pid"
nginx_pid=""

# ------------------------------------------------------------ table
if ((run_nginx || run_me)); then
    echo
    tool="wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION"
    [[ "$PROTO" == h2 ]] && tool="h2load -t$WRK_THREADS -c$WRK_CONNS -m$H2_STREAMS -D ${WRK_DURATION%s} (p99 column: mean request time)"
    echo "cache hits over $PROTO, $tool, 127.0.0.1, $(nproc) CPUs, median of $ROUNDS rounds"
    printf '%-6s | %14s | %12s | %14s | %12s | %8s | %s\n' \
        size "nginx req/s" "nginx p99" "m-e req/s" "m-e p99" "ratio" "ratio per round"
    printf '%s\n' "-------+----------------+--------------+----------------+--------------+----------+----------------"
    for l in "${labels[@]}"; do
        nr="${ng_rps[$l]:--}"
        np="${ng_p99[$l]:--}"
        mr="${me_rps[$l]:--}"
        mp="${me_p99[$l]:--}"
        [[ "$np" != - ]] && np="$np ms"
        [[ "$mp" != - ]] && mp="$mp ms"
        ratio="-"
        if [[ -n "${ratio_all[$l]:-}" ]]; then
            # shellcheck disable=SC2086
            ratio="$(median ${ratio_all[$l]})"
        fi
        printf '%-6s | %14s | %12s | %14s | %12s | %8s | %s\n' "$l" "$nr" "$np" "$mr" "$mp" "$ratio" "${ratio_all[$l]:--}"
    done
    echo "ratio = media-edge req/s / nginx req/s in the same round (median over rounds)"
    echo "peak RSS (VmHWM): media-edge $me_hwm MB, nginx (master + workers) $ng_hwm MB"
fi

# ------------------------------------------------------------ peak RSS
if ((run_rss)); then
    big="$OBJ/big.bin"
    big_bytes=$((RSS_SIZE_MB * 1024 * 1024))
    if [[ "$RSS_FILL" == random ]]; then
        log "writing ${RSS_SIZE_MB} MiB of random data to $big"
        head -c "$big_bytes" /dev/urandom >"$big"
    else
        truncate -s "$big_bytes" "$big" # sparse file
    fi
    start_me me-rss # fresh process so VmHWM only covers startup + this stream
    hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$me_pid/status" 2>/dev/null || echo 0; }
    rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$me_pid/status" 2>/dev/null || echo 0; }
    base_hwm="$(hwm_kb)"
    log "streaming ${RSS_SIZE_MB} MiB through media-edge (baseline VmHWM ${base_hwm} kB)"
    curl -s -o /dev/null --max-time 600 -w '%{http_code} %{size_download} %{speed_download}\n' \
        "http://127.0.0.1:$me_port/bench/big.bin" >"$TMP/rss-curl.txt" &
    curl_pid=$!
    max_rss=0
    peak_hwm="$base_hwm"
    while kill -0 "$curl_pid" 2>/dev/null; do
        r="$(rss_kb)"
        h="$(hwm_kb)"
        ((r > max_rss)) && max_rss="$r"
        ((h > peak_hwm)) && peak_hwm="$h"
        sleep 0.1
    done
    curl_rc=0
    wait "$curl_pid" || curl_rc=$?
    curl_pid=""
    h="$(hwm_kb)"
    ((h > peak_hwm)) && peak_hwm="$h"
    read -r code got speed <"$TMP/rss-curl.txt" || true
    ((curl_rc == 0)) || log "WARNING: curl exited with $curl_rc"
    [[ "${code:-}" == 200 ]] || log "WARNING: big object returned HTTP ${code:-?}"
    [[ "${got:-}" == "$big_bytes" ]] || log "WARNING: got ${got:-?} bytes, want $big_bytes"
    echo
    echo "peak RSS streaming a ${RSS_SIZE_MB} MiB object once (${RSS_FILL} file) through media-edge:"
    awk -v b="$base_hwm" -v p="$peak_hwm" -v m="$max_rss" -v s="${speed:-0}" 'BEGIN {
        printf "  VmHWM before: %.1f MB\n", b / 1024
        printf "  VmHWM peak:   %.1f MB   (max sampled VmRSS %.1f MB)\n", p / 1024, m / 1024
        printf "  throughput:   %.1f MB/s\n", s / 1048576 }'
    stop_pid "$me_pid"
    me_pid=""
fi
