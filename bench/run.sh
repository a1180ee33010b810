#!/usr/bin/env bash
# bench/run.sh: compare our downloader with standard tools on this machine,
# each pair in the same run against the same server, over loopback only.
# It installs nothing; it stops if a peer is missing.
#
#   bench/run.sh              # all comparisons, REPEAT=3 runs each, median
#   REPEAT=5 bench/run.sh
#
# Needs: go, libcoap3-bin (coap-client-notls, coap-server-notls,
# coap-client-openssl, coap-server-openssl), curl, sha256sum.
# Uses /usr/bin/time for peak RSS when present.
set -euo pipefail

REPEAT=${REPEAT:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

missing=()
for tool in go coap-client-notls coap-server-notls coap-client-openssl coap-server-openssl curl sha256sum; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "bench/run.sh: missing: ${missing[*]}" >&2
	echo "install them first, e.g.: apt-get install libcoap3-bin curl" >&2
	exit 2
fi

W=$(mktemp -d)
# MEM: a directory in memory (tmpfs), for rows that compare protocols and
# should not measure the disk: there fsync costs nothing and a write is a
# copy into RAM. Falls back to W where /dev/shm is missing.
MEM=$W
if [[ -d /dev/shm && -w /dev/shm ]]; then MEM=$(mktemp -d -p /dev/shm); fi
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W" "$MEM"
}
trap cleanup EXIT

echo "building..." >&2
(cd "$ROOT" && go build -o "$W/lwm2m" ./cmd/lwm2m && go build -o "$W/helper" ./bench/helper)
LWM2M=$W/lwm2m
HELPER=$W/helper

# Images.
head -c $((16 << 20)) /dev/urandom >"$W/img16"
head -c $((1 << 20)) /dev/urandom >"$W/img1"
head -c $((256 << 10)) /dev/urandom >"$W/img256k"
head -c $((256 << 20)) /dev/urandom >"$W/img256"
hash() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE SOURCE: the download must equal the source, byte for byte.
check() {
	if [[ $(hash "$1") != $(hash "$2") ]]; then
		echo "bench/run.sh: $1 differs from $2 ($(stat -c %s "$1") bytes)" >&2
		exit 1
	fi
}

# secs CMD...: run CMD (output discarded) and print its wall time in seconds.
secs() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>"$W/last.err" || { cat "$W/last.err" >&2; return 1; }
	t1=$(date +%s.%N)
	calc "$t1 - $t0" %.4f
}

# calc EXPR [FORMAT]: floating-point arithmetic without bc.
calc() { awk "BEGIN { printf \"${2:-%.2f}\", $1 }"; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_coap_server VAR BIN: run libcoap's BIN with UDP and TCP on a free
# port, DTLS on the next one with PSK "secretPSK", and set VAR to the port.
# Not in a $(...) subshell, so that cleanup knows the server's PID.
start_coap_server() {
	local -n port=$1
	port=$("$HELPER" freeport)
	"$2" -A 127.0.0.1 -p "$port" -d 40 -k secretPSK -h CoAP >/dev/null 2>&1 &
	PIDS+=($!)
	sleep 0.3
}

put() { # put PORT FILE
	coap-client-notls -m put -b 1024 -f "$2" "coap://127.0.0.1:$1/fw" >/dev/null
}

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s | %s |' "$@")"); }
ratio() { calc "$1 / $2"; }
mibs() { calc "$1 / $2" %.1f; }

# pair NAME SIZE_MIB ANCHOR_LABEL TARGET SRC -- OURS... -- ANCHOR...: time
# both alternately REPEAT times, check both outputs, add a row.
# Outputs go to $OUT/ours and $OUT/anchor (OUT is W unless the caller sets
# it); SRC names the source image.
OUT=$W
pair() {
	local name=$1 mib=$2 alabel=$3 target=$4 src=$5
	shift 5
	local ours=() anchor=() seen=0
	for a in "$@"; do
		if [[ $a == "--" ]]; then seen=$((seen + 1)); continue; fi
		if ((seen == 1)); then ours+=("$a"); else anchor+=("$a"); fi
	done
	local to=() ta=()
	for ((i = 0; i < REPEAT; i++)); do
		rm -f "$OUT/anchor" "$OUT/ours" "$OUT/ours.etag"
		ta+=("$(secs "${anchor[@]}")"); check "$OUT/anchor" "$src"
		to+=("$(secs "${ours[@]}")"); check "$OUT/ours" "$src"
	done
	local mo ma
	mo=$(printf '%s\n' "${to[@]}" | median)
	ma=$(printf '%s\n' "${ta[@]}" | median)
	echo "$name: ours ${to[*]} s; $alabel ${ta[*]} s" >&2
	row "$name" "$(printf '%.3f s (%s MiB/s)' "$mo" "$(mibs "$mib" "$mo")")" \
		"$alabel $(printf '%.3f s' "$ma")" "$(ratio "$ma" "$mo")×" "$target"
}

start_coap_server PORT coap-server-notls
put "$PORT" "$W/img16"
U="coap://127.0.0.1:$PORT/fw"

echo "CoAP/UDP pull, 16 MiB..." >&2
pair "CoAP/UDP pull 16 MiB, stop-and-wait (default)" 16 "coap-client-notls -b 1024" "≥ 1.2×" "$W/img16" \
	-- "$LWM2M" download "$U" -o "$W/ours" \
	-- coap-client-notls -b 1024 -o "$W/anchor" "$U"
pair "CoAP/UDP pull 16 MiB, -window 8 (opt-in)" 16 "coap-client-notls -b 1024" "–" "$W/img16" \
	-- "$LWM2M" download "$U" -window 8 -o "$W/ours" \
	-- coap-client-notls -b 1024 -o "$W/anchor" "$U"

echo "CoAP over TCP (BERT) vs our CoAP/UDP..." >&2
# 256 MiB: at 16 or 64 MiB the TCP run is mostly process start and fsync.
# Both write to memory: this row compares two of our transports, and with
# a disk the fsync of 256 MiB (0.3-0.7 s here) would be half the BERT time.
put "$PORT" "$W/img256"
OUT=$MEM
pair "CoAP+TCP (BERT) pull 256 MiB vs our CoAP/UDP, to tmpfs" 256 "lwm2m download coap://" "≥ 10×" "$W/img256" \
	-- "$LWM2M" download "coap+tcp://127.0.0.1:$PORT/fw" -o "$OUT/ours" \
	-- "$LWM2M" download "$U" -o "$OUT/anchor"
OUT=$W

echo "DTLS PSK pull..." >&2
PSKHEX=$(printf secretPSK | od -An -tx1 | tr -d ' \n')
start_coap_server DPORT coap-server-openssl
put "$DPORT" "$W/img16"
DU="coaps://127.0.0.1:$((DPORT + 1))/fw"
pair "CoAPS (DTLS PSK) pull 16 MiB, stop-and-wait" 16 "coap-client-openssl -b 1024" "≥ 1.2×" "$W/img16" \
	-- "$LWM2M" download "$DU" -psk-identity bench -psk-key "$PSKHEX" -o "$W/ours" \
	-- coap-client-openssl -b 1024 -u bench -k secretPSK -o "$W/anchor" "$DU"

pair "CoAPS (DTLS PSK) pull 16 MiB, -window 8 (opt-in)" 16 "coap-client-openssl -b 1024" "–" "$W/img16" \
	-- "$LWM2M" download "$DU" -window 8 -psk-identity bench -psk-key "$PSKHEX" -o "$W/ours" \
	-- coap-client-openssl -b 1024 -u bench -k secretPSK -o "$W/anchor" "$DU"

echo "HTTP pull..." >&2
"$HELPER" http "$W" >"$W/http.port" &
PIDS+=($!)
sleep 0.3
HU="http://127.0.0.1:$(cat "$W/http.port")/img256"
pair "HTTP pull 256 MiB" 256 "curl" "≥ 0.9×" "$W/img256" \
	-- "$LWM2M" download "$HU" -o "$W/ours" \
	-- curl -sf -o "$W/anchor" "$HU"
# lwm2m download fsyncs the image before it reports success; curl does not.
pair "HTTP pull 256 MiB, anchor also fsyncs" 256 "curl && sync FILE" "≥ 0.9×" "$W/img256" \
	-- "$LWM2M" download "$HU" -o "$W/ours" \
	-- sh -c 'curl -sf -o "$1" "$2" && sync "$1"' sh "$W/anchor" "$HU"
# The network side alone: in memory our fsync costs nothing.
OUT=$MEM
pair "HTTP pull 256 MiB, both to tmpfs" 256 "curl" "≥ 0.9×" "$W/img256" \
	-- "$LWM2M" download "$HU" -o "$OUT/ours" \
	-- curl -sf -o "$OUT/anchor" "$HU"
OUT=$W

echo "window 8 vs window 1 over 20 ms each way..." >&2
put "$PORT" "$W/img256k"
"$HELPER" delay "127.0.0.1:$PORT" 20ms >"$W/delay.port" &
PIDS+=($!)
sleep 0.3
XU="coap://127.0.0.1:$(cat "$W/delay.port")/fw"
pair "CoAP/UDP 256 KiB over 20 ms each way, window 8 vs 1" 0.25 "-window 1" "≥ 6×" "$W/img256k" \
	-- "$LWM2M" download "$XU" -window 8 -o "$W/ours" \
	-- "$LWM2M" download "$XU" -window 1 -o "$W/anchor"

echo "CoAP push, 16 MiB..." >&2
# Our server pushes into our client (its own process) and coap-client PUTs
# into coap-server, alternately, in one go test run (bench/push_test.go).
PUSH=$(cd "$ROOT" && go test -run '^$' -bench 'Push/processes=2' -benchtime "${REPEAT}x" ./bench | grep '^BenchmarkPush')
echo "$PUSH" >&2
read -r ours_mbs anchor_mbs push_ratio < <(echo "$PUSH" | awk '{for (i = 1; i < NF; i++) { if ($(i+1) == "MB/s") o = $i; if ($(i+1) == "libcoap-MB/s") a = $i; if ($(i+1) == "x-libcoap") r = $i } } END {print o, a, r}')
row "CoAP push 16 MiB, our server into our client (Block1)" "$(calc "16 * 1.048576 / $ours_mbs" %.3f) s ($ours_mbs MB/s)" \
	"coap-client-notls -m put -b 1024 into coap-server-notls $(calc "16 * 1.048576 / $anchor_mbs" %.3f) s" "$(calc "$push_ratio")×" "≥ 1.0×"

echo "peak RSS, 1 MiB vs 256 MiB..." >&2
# peak_kib CMD...: peak RSS of CMD in KiB.
peak_kib() {
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -f 'peak-rss-kib %M' "$@" 2>&1 >/dev/null | awk '/^peak-rss-kib/ {print $2}'
	else
		"$HELPER" rss "$@" 2>&1 >/dev/null | awk '/^peak-rss-kib/ {print $2}'
	fi
}
rss_row() { # rss_row NAME URI1 URI256 [FLAGS...]
	local name=$1 u1=$2 u256=$3
	shift 3
	rm -f "$W/ours" "$W/ours.etag"
	local r1 r256
	r1=$(peak_kib "$LWM2M" download "$u1" "$@" -o "$W/ours"); check "$W/ours" "$W/img1"
	rm -f "$W/ours" "$W/ours.etag"
	r256=$(peak_kib "$LWM2M" download "$u256" "$@" -o "$W/ours"); check "$W/ours" "$W/img256"
	row "$name" "$(calc "$r256/1024" %.1f) MiB for 256 MiB" "$(calc "$r1/1024" %.1f) MiB for 1 MiB" \
		"$(calc "($r256-$r1)/1024" %+.1f) MiB" "≤ 16 MiB, ≤ +2 MiB"
}
rss_row "Peak RSS of lwm2m download, HTTP" "http://127.0.0.1:$(cat "$W/http.port")/img1" "$HU"
start_coap_server RPORT coap-server-notls
put "$RPORT" "$W/img1"
start_coap_server RPORT2 coap-server-notls
put "$RPORT2" "$W/img256"
rss_row "Peak RSS of lwm2m download, CoAP/UDP -window 8" "coap://127.0.0.1:$RPORT/fw" "coap://127.0.0.1:$RPORT2/fw" -window 8

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(go version | cut -d' ' -f3), $(coap-client-notls -h 2>&1 | grep -m1 -o 'v[0-9][0-9.]*' || true) libcoap, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Median of $REPEAT runs each, anchor and ours alternating; ratio = anchor time / our time (> 1: we are faster)."
echo
echo "| Comparison | Ours | Anchor | Ratio | Target |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
