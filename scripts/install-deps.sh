#!/usr/bin/env bash
# Everything tunsec needs on a fresh Debian 12 machine: the C toolchain and
# OpenSSL headers for the fast path, the tools the tests and benchmarks use
# (iperf3, strongSwan with kernel-libipsec, wireguard-go, a Prometheus server
# that tests/e2e/test_metrics.py starts itself, FreeRADIUS that
# tests/interop/test_strongswan_radius.py starts and its radclient), fail2ban (its
# fail2ban-regex reads tunsec's logs with contrib/fail2ban's filter in the tests), clang with the
# libFuzzer runtime for `make fuzz`, podman (runc: crun rejects hybrid cgroups)
# and mmdebstrap for `make image` and the container test, systemd-analyze for the
# unit file, and the Python package with its C extension (its test extras bring
# atheris).  Idempotent.  The fail2ban it installs is left disabled (KEEP_FAIL2BAN=1: not touched;
# one installed before it ran is not touched either).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential libssl-dev python3-dev python3-pip pkg-config
  iproute2 iputils-ping iperf3 procps iptables nftables acl
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libcharon-extauth-plugins
  libstrongswan-standard-plugins libstrongswan-extra-plugins strongswan-pki
  wireguard-go wireguard-tools
  clang libclang-rt-14-dev
  podman runc mmdebstrap systemd
  prometheus
  freeradius freeradius-utils
  fail2ban
)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# the tests need fail2ban-regex only (and run fail2ban-server themselves, on a jail of their own):
# the service is left disabled, for sysvinit (update-rc.d) and systemd alike, and stopped where a
# running systemd may have started it anyway.  On every run that finds fail2ban installed or tried to
# install it, from the EXIT trap: an install failing after fail2ban's postinst enabled it (a later
# package's postinst, a dropped mirror) would otherwise leave it enabled, and a re-run would never
# see it "missing" again (review revban F6).  Only a fail2ban this script installed (now, or in an
# earlier run that failed: its marker, written before the install, removed by a run that ends well)
# is touched: an operator's own, installed before, keeps running as they set it up.  KEEP_FAIL2BAN=1: a machine meant to run it.
marker_dir=${INSTALL_DEPS_STATE:-/var/lib/tunsec-install-deps}
disable_fail2ban() {
  [ "${KEEP_FAIL2BAN:-0}" = 1 ] && return 0
  [[ " ${missing[*]} " == *" fail2ban "* ]] || [ -e "$marker_dir/fail2ban" ] || return 0
  if command -v update-rc.d >/dev/null; then
    $SUDO update-rc.d fail2ban disable >/dev/null 2>&1 || true
  fi
  if command -v systemctl >/dev/null; then
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now fail2ban >/dev/null 2>&1 || true
    else
      $SUDO systemctl disable fail2ban >/dev/null 2>&1 || true
    fi
  fi
}
policy=""
on_exit() {
  local rc=$?
  if [ -n "$policy" ]; then $SUDO rm -f "$policy" || true; fi
  disable_fail2ban
  # a run that went through has left it disabled: later runs leave it to the operator, who may turn it
  # on (review revban2 F2); after a failed one the next run disables it again
  if [ "$rc" = 0 ]; then $SUDO rm -f "$marker_dir/fail2ban" || true; fi
  exit "$rc"
}
trap on_exit EXIT

if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  # no service the packages bring is started by their install (policy-rc.d's 101: "action
  # forbidden", honoured by invoke-rc.d and deb-systemd-invoke): without a running systemd (CI
  # machines, containers) fail2ban's postinst would otherwise start its daemon from its init script,
  # whose default sshd jail bans addresses on the host.  One there already (Docker's) is left as it is.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# scripts/install-deps.sh: no service starts while it installs packages\nexit 101\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
  fi
  if [[ " ${missing[*]} " == *" fail2ban "* ]]; then
    $SUDO mkdir -p "$marker_dir" && $SUDO touch "$marker_dir/fail2ban"
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then
    $SUDO rm -f "$policy"
    policy=""
  fi
fi
# (fail2ban's service: disabled by on_exit)

# tunsec's unprivileged user (tunsec { user } defaults to it)
if ! getent passwd tunsec >/dev/null; then
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin tunsec
fi
# the dataplane worker's own user and group (tunsec { worker_user } defaults to it): a worker taken
# over by a packet then cannot read what tunsec's user can (configuration, keys, control socket)
if ! getent passwd tunsec-dp >/dev/null; then
  $SUDO useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tunsec-dp
fi

PY=${PYTHON:-python3}
# Debian's own python3 is "externally managed" (PEP 668): its pip refuses to install anything
# outside a virtual environment.  tunsec and its test tools go into /usr/local (where Debian's pip
# puts root's installs, beside and not over the packaged modules), as on the machines with a Python
# of their own, so that `python3` in the Makefile and the tests is the one that has them.
if [ -e "$($PY -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi
$PY -m pip install -q --disable-pip-version-check --root-user-action=ignore setuptools wheel "cffi>=1.16"
# atheris (test extras) comes as a manylinux wheel for CPython 3.11 on x86-64;
# where pip has to build it, it needs the clang above (CLANG_BIN says which)
CLANG_BIN=${CLANG_BIN:-$(command -v clang)} \
  $PY -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-build-isolation -e '.[test]'
