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
# atheris).  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential libssl-dev python3-dev python3-pip pkg-config
  iproute2 iputils-ping iperf3 procps iptables nftables
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libcharon-extauth-plugins
  libstrongswan-standard-plugins libstrongswan-extra-plugins strongswan-pki
  wireguard-go wireguard-tools
  clang libclang-rt-14-dev
  podman runc mmdebstrap systemd
  prometheus
  freeradius freeradius-utils
  fail2ban
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the tests need fail2ban-regex only: a fail2ban service the package just started under systemd
  # (its default sshd jail) would ban addresses on the host, so it is stopped and left disabled
  if [[ " ${missing[*]} " == *" fail2ban "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now fail2ban >/dev/null 2>&1 || true
  fi
fi

# tunsec's unprivileged user (tunsec { user } defaults to it)
if ! getent passwd tunsec >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin tunsec
fi
# the dataplane worker's own user and group (tunsec { worker_user } defaults to it): a worker taken
# over by a packet then cannot read what tunsec's user can (configuration, keys, control socket)
if ! getent passwd tunsec-dp >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
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
