#!/usr/bin/env bash
# Build the tunsec image (docker/Dockerfile) as $IMAGE (localhost/tunsec:latest)
# with podman, or with docker where that is what the machine runs.
#
# When the Dockerfile's base image is neither present nor pullable (machines
# that reach Debian's package mirror but no container registry), it is made
# from the mirror: mmdebstrap writes a minimal bookworm root file system
# (merged /usr, no docs/man/locales, as debian:bookworm-slim) and
# `podman import` stores it under the name the Dockerfile's FROM uses, so the
# Dockerfile stays in its ordinary form.
#
# Environment: IMAGE, ENGINE (podman|docker), DEBIAN_MIRROR, BUILD_FLAGS (extra
# flags for the build, e.g. --no-cache).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/tunsec:latest}
DOCKERFILE=docker/Dockerfile
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "build-image: $*" >&2; exit 1; }

pick_engine() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  die "neither podman nor a running docker found: install podman (apt-get install podman buildah runc mmdebstrap uidmap, as scripts/install-deps.sh does)"
}
ENGINE=$(pick_engine)

ENGINE_FLAGS=()
BUILD_LIMITS=()
if [ "$ENGINE" = podman ]; then
  # crun (podman's default) rejects this kernel's hybrid cgroup layout; runc does not
  command -v runc >/dev/null && ENGINE_FLAGS+=(--runtime runc)
  # podman's default RLIMIT_NOFILE is above what these machines allow
  # --format docker: OCI images have no HEALTHCHECK
  # --jobs 2: the runtime stage's apt-get runs while the build stage compiles
  BUILD_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --format docker --jobs 2)
  # pip in the build stage trusts what the host trusts (a TLS-inspecting proxy's CA); the
  # bundle is a build volume, not a layer
  HOST_CA=/etc/ssl/certs/ca-certificates.crt
  [ -r "$HOST_CA" ] && BUILD_LIMITS+=(-v "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
engine() { "$ENGINE" "${ENGINE_FLAGS[@]}" "$@"; }

# "debian:bookworm-slim" as a registry knows it (podman resolves the short name to it)
BASE=$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$DOCKERFILE" | head -n 1)
[ -n "$BASE" ] || die "no FROM line in $DOCKERFILE"
case "$BASE" in
  */*) FULL_BASE=$BASE ;;
  *)   FULL_BASE=docker.io/library/$BASE ;;
esac

have_image() { engine image inspect "$1" >/dev/null 2>&1; }

base_from_mirror() {
  command -v mmdebstrap >/dev/null \
    || die "$FULL_BASE cannot be pulled and mmdebstrap (to build it from $DEBIAN_MIRROR) is missing: apt-get install mmdebstrap"
  local suite=${BASE##*:}
  suite=${suite%-slim}
  local hooks=/usr/share/mmdebstrap/hooks/merged-usr
  echo "build-image: no registry for $FULL_BASE; building it from $DEBIAN_MIRROR with mmdebstrap" >&2
  BASE_TAR=$(mktemp --suffix=.tar)
  trap 'rm -f "$BASE_TAR"' EXIT
  # --variant=minbase and the slim image's dpkg settings (no docs, man pages, locales;
  # unsafe-io as its docker-apt-speedup); merged /usr via the hook, not the usrmerge
  # package (which would drag perl into every image)
  mmdebstrap --quiet --variant=minbase ${hooks:+--hook-dir=$hooks} \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Acquire::Languages "none"' --dpkgopt='force-unsafe-io' \
    "$suite" "$BASE_TAR" "$DEBIAN_MIRROR"
  engine import --change 'CMD ["bash"]' --message "mmdebstrap $suite minbase from $DEBIAN_MIRROR" \
    "$BASE_TAR" "$FULL_BASE" >/dev/null
  rm -f "$BASE_TAR"
}

ensure_base() {
  have_image "$FULL_BASE" && return
  if timeout 60 "$ENGINE" pull -q "$FULL_BASE" >/dev/null 2>&1; then
    return
  fi
  [ "$ENGINE" = podman ] || die "cannot pull $FULL_BASE; load it into docker (docker load) and retry"
  base_from_mirror
}

start=$(date +%s)
ensure_base
# host network for the RUN steps: apt and pip reach the mirror without podman's own networks
engine build "${BUILD_LIMITS[@]}" --network host ${BUILD_FLAGS:-} -f "$DOCKERFILE" -t "$IMAGE" .
size=$(engine image inspect --format '{{.Size}}' "$IMAGE")
echo "build-image: $IMAGE built with $ENGINE in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
