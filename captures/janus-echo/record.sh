#!/usr/bin/env bash
# Record the egressaudit sample capture captures/janus-echo/call.pcapng:
# a real WebRTC call between headless Chromium and a Janus echo test, with a
# telemetry side channel, entirely inside two network namespaces on this host.
#
#   eaclient (10.77.0.2/24, eac0) <== veth ==> easerver (10.77.0.1/24, eas0)
#     chromium --headless               dnsmasq     udp/53   *.selfhosted.test -> 10.77.0.1
#     tcpdump -i eac0                   sink.py     tcp/80   http://meet.selfhosted.test/ (page)
#                                       sink.py     tcp/443  https://stats.selfhosted.test/v1/stats
#                                       janus       tcp/8088 http://meet.selfhosted.test:8088/janus
#                                       janus       udp/20000-20100 ICE/DTLS/SRTP (echo test)
#
# Neither namespace has a default route or any link but the veth pair, so no
# packet can leave the machine.  Run as root; needs the Debian packages
# janus janus-demos chromium tcpdump dnsmasq tshark (tshark brings editcap,
# capinfos) and openssl, python3.  Idempotent: it removes what an interrupted
# earlier run left (its own namespaces), and a trap stops every process it
# started, deletes the namespaces and the temporary directory on any exit.
#
# Environment: DURATION (s of media, default 20), BITRATE (video cap in bit/s
# requested through the echo test plugin, default 128000), OUT (default
# call.pcapng beside this script), KEEP_WORK=1 keeps the temporary directory
# (logs, stats.jsonl, the raw pcap) for inspection.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DURATION="${DURATION:-20}"
BITRATE="${BITRATE:-128000}"
OUT="${OUT:-$HERE/call.pcapng}"
KEEP_WORK="${KEEP_WORK:-0}"

NS_C=eaclient NS_S=easerver
VETH_C=eac0 VETH_S=eas0
CLI_IP=10.77.0.2 SRV_IP=10.77.0.1 PREFIX=24
DOMAIN=selfhosted.test
WEB_NAME="meet.$DOMAIN" STATS_NAME="stats.$DOMAIN"
RTP_RANGE=20000-20100

log() { printf '[record] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (network namespaces, ports 53/80/443)"
for c in ip janus chromium tcpdump dnsmasq editcap capinfos tshark openssl python3 ss sha256sum; do
  command -v "$c" >/dev/null || die "missing command: $c (apt-get install -y janus janus-demos chromium tcpdump dnsmasq tshark)"
done
JANUS_JS_DIR=/usr/share/janus/demos/javascript
[[ -f $JANUS_JS_DIR/janus-gateway/janus.js ]] || die "janus-demos not installed ($JANUS_JS_DIR)"
JANUS_LIB="$(dirname "$(dirname "$(dpkg -L janus | grep -m1 '/plugins/libjanus_echotest.so$')")")"
[[ -d $JANUS_LIB/plugins ]] || die "cannot find the Janus plugin folder"
PY=/usr/bin/python3; [[ -x $PY ]] || PY="$(command -v python3)"
# Debian's /usr/bin/chromium is a wrapper that sources /etc/chromium.d/: it
# exports Google API keys (which switch on Google account/GAIA requests) and adds
# --enable-remote-extensions (extension update checks).  Call the browser binary
# itself so that neither applies; fall back to the wrapper elsewhere.
CHROME_BIN=/usr/lib/chromium/chromium; [[ -x $CHROME_BIN ]] || CHROME_BIN="$(command -v chromium)"

# Nothing we start may use a proxy from the caller's environment.
unset http_proxy https_proxy ftp_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY FTP_PROXY ALL_PROXY NO_PROXY

PIDS=()
WORK=""

kill_ns_procs() {  # every process inside one of our own namespaces was started by this script
  local ns=$1 p
  ip netns list 2>/dev/null | grep -qw "^$ns" || return 0
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
}

teardown() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    timeout 5 tail --pid="${PIDS[i]}" -f /dev/null 2>/dev/null || kill -KILL "${PIDS[i]}" 2>/dev/null || true
  done
  PIDS=()
  kill_ns_procs "$NS_C"; kill_ns_procs "$NS_S"
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  rm -rf "/etc/netns/$NS_C" "/etc/netns/$NS_S"
  rmdir /etc/netns 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  teardown
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORK == 1 || $rc -ne 0 ]]; then log "kept $WORK (logs)"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- idempotence: remove what an interrupted run may have left ---------------
teardown

WORK="$(mktemp -d /tmp/egressaudit-janus-echo.XXXXXX)"
mkdir -p "$WORK"/{logs,out,janus,www,home,profile}
log "work directory $WORK"

# --- namespaces and the veth pair ---------------------------------------------
for ns in "$NS_C" "$NS_S"; do
  ip netns add "$ns"
  # IPv4 only: no router solicitations, no link-local chatter in the sample.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  # No IGMP reports for 224.0.0.x groups (Chromium joins the mDNS group
  # 224.0.0.251), so every IPv4 packet on the link is between the two hosts.
  ip netns exec "$ns" sysctl -qw net.ipv4.igmp_link_local_mcast_reports=0
  ip -n "$ns" link set lo up
done
ip link add "$VETH_C" netns "$NS_C" type veth peer name "$VETH_S" netns "$NS_S"
ip -n "$NS_C" addr add "$CLI_IP/$PREFIX" dev "$VETH_C"
ip -n "$NS_S" addr add "$SRV_IP/$PREFIX" dev "$VETH_S"
ip -n "$NS_C" link set "$VETH_C" up
ip -n "$NS_S" link set "$VETH_S" up

# `ip netns exec eaclient` bind-mounts this over /etc/resolv.conf.
mkdir -p "/etc/netns/$NS_C"
printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$SRV_IP" >"/etc/netns/$NS_C/resolv.conf"

# --- server side: DNS ---------------------------------------------------------
ip netns exec "$NS_S" dnsmasq --keep-in-foreground --conf-file=/dev/null --user=root --group=root \
  --no-resolv --no-hosts --no-poll --bind-interfaces --listen-address="$SRV_IP" \
  --address="/$DOMAIN/$SRV_IP" --log-queries --log-facility="$WORK/logs/dnsmasq.log" \
  --pid-file="$WORK/dnsmasq.pid" 2>"$WORK/logs/dnsmasq.err" &
PIDS+=($!)

# --- server side: page + telemetry sink ---------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$STATS_NAME" \
  -addext "subjectAltName=DNS:$STATS_NAME" \
  -keyout "$WORK/stats.key" -out "$WORK/stats.crt" 2>"$WORK/logs/openssl.log"
cp "$HERE"/page/* "$WORK/www/"
ln -s "$JANUS_JS_DIR" "$WORK/www/vendor"
ip netns exec "$NS_S" "$PY" "$HERE/sink.py" --bind "$SRV_IP" --web-root "$WORK/www" \
  --http-port 80 --https-port 443 --cert "$WORK/stats.crt" --key "$WORK/stats.key" \
  --out-dir "$WORK/out" 2>"$WORK/logs/sink.log" &
PIDS+=($!)

# --- server side: Janus with the HTTP transport and the echo test plugin only --
others() {  # comma-separated .so names in folder $1 except $2
  local f keep=$2 list=()
  for f in "$1"/libjanus_*.so; do [[ $(basename "$f") == "$keep" ]] || list+=("$(basename "$f")"); done
  local IFS=,; echo "${list[*]}"
}
cat >"$WORK/janus/janus.jcfg" <<EOF
general: {
	configs_folder = "$WORK/janus"
	plugins_folder = "$JANUS_LIB/plugins"
	transports_folder = "$JANUS_LIB/transports"
	events_folder = "$JANUS_LIB/events"
	loggers_folder = "$JANUS_LIB/loggers"
	debug_level = 4
	debug_timestamps = true
	debug_colors = false
	server_name = "egressaudit-sample"
	session_timeout = 60
	hide_dependencies = true
}
certificates: {
}
media: {
	ipv6 = false
	rtp_port_range = "$RTP_RANGE"
}
nat: {
	# No STUN/TURN server: the only candidate is the namespace address.
	nice_debug = false
	ice_enforce_list = "$VETH_S"
	ignore_mdns = true
}
plugins: {
	disable = "$(others "$JANUS_LIB/plugins" libjanus_echotest.so)"
}
transports: {
	disable = "$(others "$JANUS_LIB/transports" libjanus_http.so)"
}
loggers: {
	disable = "$(others "$JANUS_LIB/loggers" none)"
}
events: {
	broadcast = false
}
EOF
cat >"$WORK/janus/janus.transport.http.jcfg" <<EOF
general: {
	json = "indented"
	base_path = "/janus"
	http = true
	port = 8088
	# No 'ip = ...': with IPv6 disabled in the namespace, Janus 1.1.2 fails to
	# bind to an IPv4 address given there; the namespace has only lo and $VETH_S.
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
cors: {
}
EOF
printf 'general: {\n}\n' >"$WORK/janus/janus.plugin.echotest.jcfg"
ip netns exec "$NS_S" janus -C "$WORK/janus/janus.jcfg" -F "$WORK/janus" \
  >"$WORK/logs/janus.log" 2>&1 &
PIDS+=($!)

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out waiting for $what (logs in $WORK/logs)"
    sleep 0.2
  done
}
listening() { ip netns exec "$NS_S" ss -Hln "$1" "( sport = :$2 )" | grep -qE "($SRV_IP|0\.0\.0\.0|\*):$2 "; }
wait_for 10 "dnsmasq on udp/53" listening -u 53
wait_for 10 "sink on tcp/80" listening -t 80
wait_for 10 "sink on tcp/443" listening -t 443
wait_for 20 "janus on tcp/8088" listening -t 8088
log "servers up in $NS_S: dnsmasq, sink.py, janus $(janus --version 2>/dev/null | sed -n 's/^Janus version: [0-9]* (\(.*\))/\1/p')"

# --- client side: capture, then the browser -----------------------------------
ip netns exec "$NS_C" tcpdump -i "$VETH_C" -n -s 0 -U --immediate-mode -w "$WORK/raw.pcap" \
  2>"$WORK/logs/tcpdump.log" &
TCPDUMP_PID=$!
PIDS+=("$TCPDUMP_PID")
wait_for 10 "tcpdump" grep -q "listening on" "$WORK/logs/tcpdump.log"
sleep 0.5

URL="http://$WEB_NAME/?duration=$DURATION&bitrate=$BITRATE"
log "chromium -> $URL (${DURATION}s of media)"
# Besides the flags that make it headless and fake the devices, the rest keep
# Chromium's own background traffic (Google services, updates, field trials,
# mDNS) out of the sample.  Chromium 156 still starts by looking up
# accounts.google.com, clients2.google.com and update.googleapis.com (never
# reachable here: dnsmasq refuses them); --host-resolver-rules makes those
# lookups fail inside the browser instead, so the sample's DNS is the call's
# alone.  Any other foreign lookup is reported after the checks below.
ip netns exec "$NS_C" env -u GOOGLE_API_KEY -u GOOGLE_DEFAULT_CLIENT_ID -u GOOGLE_DEFAULT_CLIENT_SECRET \
  HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config" XDG_CACHE_HOME="$WORK/home/.cache" \
  "$CHROME_BIN" --headless --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-default-apps --disable-extensions --no-default-browser-check --no-proxy-server \
  --disable-breakpad --disable-client-side-phishing-detection --disable-domain-reliability \
  --disable-field-trial-config --metrics-recording-only --no-pings --password-store=basic \
  --disable-dev-shm-usage --media-router=0 \
  --host-resolver-rules="MAP *.google.com ~NOTFOUND, MAP *.googleapis.com ~NOTFOUND, MAP *.gvt1.com ~NOTFOUND" \
  --disable-features=OptimizationHints,OptimizationHintsFetching,OptimizationGuideModelDownloading,OptimizationTargetPrediction,MediaRouter,DialMediaRouteProvider,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,WebRtcHideLocalIpsWithMdns \
  --use-fake-device-for-media-stream --use-fake-ui-for-media-stream \
  --autoplay-policy=no-user-gesture-required --ignore-certificate-errors \
  --unsafely-treat-insecure-origin-as-secure="http://$WEB_NAME" \
  --user-data-dir="$WORK/profile" --enable-logging=stderr --v=0 \
  "$URL" >"$WORK/logs/chromium.log" 2>&1 &
CHROME_PID=$!
PIDS+=("$CHROME_PID")

end=$((SECONDS + DURATION + 60))
until [[ -f $WORK/out/done ]]; do
  kill -0 "$CHROME_PID" 2>/dev/null || die "chromium exited early (see $WORK/logs/chromium.log)"
  ((SECONDS < end)) || die "the page never reported the end of the call (see $WORK/logs)"
  sleep 0.5
done
sleep 1
log "page reports: $(cat "$WORK/out/done")"
kill -TERM "$CHROME_PID" 2>/dev/null || true
timeout 10 tail --pid="$CHROME_PID" -f /dev/null || kill -KILL "$CHROME_PID" 2>/dev/null || true
sleep 1
kill -INT "$TCPDUMP_PID" 2>/dev/null || true
timeout 10 tail --pid="$TCPDUMP_PID" -f /dev/null || die "tcpdump did not stop"
grep -qx ok "$WORK/out/done" || die "the call did not complete (see $WORK/out/stats.jsonl and $WORK/logs)"

# --- pcap -> pcapng, then check what it holds ---------------------------------
COMMENT="egressaudit sample janus-echo: headless Chromium $("$CHROME_BIN" --version 2>/dev/null | awk '{print $2}') \
(fake camera/mic) <-> Janus $(dpkg-query -W -f='${Version}' janus) echo test, recorded $(date -u +%FT%TZ) \
on $(uname -sr) by captures/janus-echo/record.sh on $VETH_C in netns $NS_C; namespaces $NS_C $CLI_IP and \
$NS_S $SRV_IP joined by a veth pair, no route off the host."
editcap -F pcapng --capture-comment "$COMMENT" "$WORK/raw.pcap" "$WORK/call.pcapng"

count() { tshark -r "$WORK/call.pcapng" "$@" 2>/dev/null | wc -l; }
MEDIA_PORT="$(tshark -r "$WORK/call.pcapng" -Y "stun && ip.src==$SRV_IP" -T fields -e udp.srcport 2>/dev/null | sort -u | head -1)"
[[ -n $MEDIA_PORT ]] || die "no STUN from Janus in the capture"
# Wireshark has no heuristic for SRTP/SRTCP (encrypted, rtcp-mux on one port):
# demultiplex as RFC 7983 does (first byte 128..191 is RTP/RTCP) and split
# RTCP off by its packet type in the second byte (192..223, RFC 5761).
RTP_ANY="udp.port==$MEDIA_PORT && udp.payload[0]>=0x80 && udp.payload[0]<=0xbf"
RTCP_PT="udp.payload[1]>=0xc0 && udp.payload[1]<=0xdf"
declare -A CHECK=(
  [dns-answers]="$(count -Y "dns.flags.response==1 && dns.a==$SRV_IP && dns.qry.name matches \"\\\\.$DOMAIN\$\"")"
  [tls-sni]="$(count -Y "tls.handshake.extensions_server_name==\"$STATS_NAME\"")"
  [http-janus]="$(count -Y "http.request && tcp.dstport==8088")"
  [http-page]="$(count -Y "http.request && tcp.dstport==80")"
  [stun]="$(count -Y stun)"
  [dtls]="$(count -Y dtls)"
  [srtp]="$(count -Y "$RTP_ANY && !($RTCP_PT)")"
  [srtcp]="$(count -Y "$RTP_ANY && ($RTCP_PT)")"
  [off-namespace]="$(count -Y "(ip && !(ip.src==10.77.0.0/$PREFIX && ip.dst==10.77.0.0/$PREFIX)) || ipv6")"
)
fail=0
for k in dns-answers tls-sni http-janus http-page stun dtls srtp srtcp off-namespace; do
  log "check $k: ${CHECK[$k]} packets"
  if [[ $k == off-namespace ]]; then ((CHECK[$k] == 0)) || fail=1; else ((CHECK[$k] > 0)) || fail=1; fi
done
((fail == 0)) || die "the capture lacks an expected flow (see above)"
# Lookups of names outside $DOMAIN are Chromium's own background traffic; they
# never leave (dnsmasq answers REFUSED) but are not part of the call.
FOREIGN="$(tshark -r "$WORK/call.pcapng" -Y "dns.flags.response==0 && !(dns.qry.name matches \"\\\\.$DOMAIN\$\")" \
  -T fields -e dns.qry.name 2>/dev/null | sort -u | paste -sd' ')"
[[ -z $FOREIGN ]] || log "WARNING: DNS queries for names outside $DOMAIN: $FOREIGN"

cp "$WORK/call.pcapng" "$OUT"
log "wrote $OUT"
capinfos -c -d -u -s "$OUT" | sed 's/^/[record]   /' >&2
log "sha256 $(sha256sum "$OUT" | awk '{print $1}')"
log "media port on Janus: udp/$MEDIA_PORT"
tail -n 1 "$WORK/out/stats.jsonl" | "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); print("[record] last getStats summary:", json.dumps(d["summary"]))' >&2
