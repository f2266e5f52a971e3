#!/usr/bin/env bash
# The main job, end to end: two network namespaces ("site A" and "site B")
# joined by a veth pair, a tunsec instance in each that negotiates its SAs
# with IKEv2 (PSK; MODE=manual for manually keyed SAs instead), ping and
# iperf3 through the tunnel, `tunsec status` on both sides, then everything
# torn down.  Needs root.
set -euo pipefail
PY=${PYTHON:-python3}
MODE=${MODE:-ike}
SUFFIX=$$
NA=tsdemo-a-$SUFFIX NB=tsdemo-b-$SUFFIX
DIR=$(mktemp -d /tmp/tunsec-demo.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NA" 2>/dev/null || true
  ip netns del "$NB" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

echo "== two namespaces: $NA (192.0.2.1, inner 10.1.0.1) and $NB (192.0.2.2, inner 10.2.0.1)"
ip netns add "$NA"; ip netns add "$NB"
ip link add va-$SUFFIX type veth peer name vb-$SUFFIX
ip link set va-$SUFFIX netns "$NA"; ip link set vb-$SUFFIX netns "$NB"
ip -n "$NA" addr add 192.0.2.1/24 dev va-$SUFFIX; ip -n "$NB" addr add 192.0.2.2/24 dev vb-$SUFFIX
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set va-$SUFFIX up; ip -n "$NB" link set vb-$SUFFIX up
ip -n "$NA" addr add 10.1.0.1/32 dev lo; ip -n "$NB" addr add 10.2.0.1/32 dev lo

if [ "$MODE" = manual ]; then
KEY_AB=$($PY -c 'import secrets; print(secrets.token_hex(20))')
KEY_BA=$($PY -c 'import secrets; print(secrets.token_hex(20))')
write_conf() {  # name local remote local_ts remote_ts spi_in key_in spi_out key_out
  umask 077
  cat > "$DIR/$1.conf" <<CONF
tunsec {
  tun = tunsec0
  mtu = auto
  control_socket = $DIR/$1.sock
  state_dir = $DIR/$1-state
}
manual {
  peer {
    local_addr = $2
    remote_addr = $3
    local_ts = $4
    remote_ts = $5
    esp = aes128gcm16
    spi_in = $6
    key_in = 0x$7
    spi_out = $8
    key_out = 0x$9
    replay_window = 4096
  }
}
CONF
}
write_conf a 192.0.2.1 192.0.2.2 10.1.0.0/24 10.2.0.0/24 0xc0010001 "$KEY_BA" 0xc0020001 "$KEY_AB"
write_conf b 192.0.2.2 192.0.2.1 10.2.0.0/24 10.1.0.0/24 0xc0020001 "$KEY_AB" 0xc0010001 "$KEY_BA"
else
PSK=$($PY -c 'import secrets; print(secrets.token_hex(24))')
write_conf() {  # name local remote local_id remote_id local_ts remote_ts start_action
  umask 077
  cat > "$DIR/$1.conf" <<CONF
tunsec {
  tun = tunsec0
  control_socket = $DIR/$1.sock
}
connections {
  peer {
    local_addrs = $2
    remote_addrs = $3
    proposals = aes256gcm16-prfsha384-ecp384
    local {
      auth = psk
      id = $4
    }
    remote {
      auth = psk
      id = $5
    }
    children {
      net {
        local_ts = $6
        remote_ts = $7
        esp_proposals = aes128gcm16
        replay_window = 4096
        start_action = $8
      }
    }
  }
}
secrets {
  ike-peer {
    id-a = site-a.example.org
    id-b = site-b.example.org
    secret = 0x$PSK
  }
}
CONF
}
write_conf b 192.0.2.2 192.0.2.1 site-b.example.org site-a.example.org 10.2.0.0/24 10.1.0.0/24 none
write_conf a 192.0.2.1 192.0.2.2 site-a.example.org site-b.example.org 10.1.0.0/24 10.2.0.0/24 start
fi

echo "== tunsec check"
$PY -m tunsec check -c "$DIR/a.conf"
$PY -m tunsec check -c "$DIR/b.conf"

if [ "$MODE" = manual ]; then
  # new keys, a new installation: state_dir is initialised once, on purpose (a lost one refuses to start).
  # tunsec drops to its user, which must reach the state directory below $DIR (mktemp's 0700)
  chmod 0711 "$DIR"
  echo "== tunsec init-state"
  $PY -m tunsec init-state -c "$DIR/a.conf"
  $PY -m tunsec init-state -c "$DIR/b.conf"
fi

echo "== starting tunsec in both namespaces ($MODE keying)"
ip netns exec "$NB" $PY -m tunsec up -c "$DIR/b.conf" 2> "$DIR/b.log" & PIDS+=($!)
for _ in $(seq 50); do $PY -m tunsec status -c "$DIR/b.conf" >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec "$NA" $PY -m tunsec up -c "$DIR/a.conf" 2> "$DIR/a.log" & PIDS+=($!)
for _ in $(seq 50); do $PY -m tunsec status -c "$DIR/a.conf" >/dev/null 2>&1 && break; sleep 0.2; done
if [ "$MODE" != manual ]; then
  # site A initiates (start_action = start): wait for its Child SA
  for _ in $(seq 50); do
    $PY -m tunsec status -c "$DIR/a.conf" --json 2>/dev/null | grep -q '"spi_out"' && break
    sleep 0.2
  done
  echo "-- site A's log"
  sed -n 's/^[0-9-]* [0-9:,]* //p' "$DIR/a.log" | grep -E "IKE SA|CHILD_SA"
fi

echo "== ping 10.1.0.1 -> 10.2.0.1 and back"
ip netns exec "$NA" ping -c 3 -i 0.2 -I 10.1.0.1 10.2.0.1
ip netns exec "$NB" ping -c 3 -i 0.2 -I 10.2.0.1 10.1.0.1

echo "== iperf3 TCP, 5 s, through the tunnel"
ip netns exec "$NB" iperf3 -s -1 -B 10.2.0.1 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5
ip netns exec "$NA" iperf3 -c 10.2.0.1 -B 10.1.0.1 -t 5 | tail -4

echo "== tunsec status, site A"
$PY -m tunsec status -c "$DIR/a.conf"
echo "== tunsec status, site B"
$PY -m tunsec status -c "$DIR/b.conf"
echo "== tearing down"
