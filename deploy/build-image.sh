#!/usr/bin/env bash
# Build the serving image (deploy/Containerfile) on a machine that cannot pull a base image or
# run a container, then check it from its root filesystem.
#
# - the base: a Debian bookworm root filesystem made by debootstrap (Python 3.11), made an image
#   with `buildah from scratch`;
# - the Python packages: a wheelhouse filled here first with this machine's pip (keras-bundler's
#   wheel, its serve extra, COMPONENTS), so the image build itself needs no network;
# - the build: `buildah build` of deploy/Containerfile on that base, its RUN step in a chroot
#   (--isolation chroot: no container runtime needed);
# - the checks, in a chroot of the image's root filesystem as the image's own user: `bundle
#   --version`, `bundle env` (written to dist/image-env.txt: the `--env` file a deploy gate
#   verifies against) and, given CHECK_BUNDLE, `bundle verify` of that bundle mounted read-only
#   at /mnt/models, a write into it refused, and `bundle serve` answering /v2/health/ready.
#
# Needs root, debootstrap and buildah (apt-get install debootstrap buildah), a Python 3.11 with
# pip (the wheelhouse is made for the image's Python), and the wheel: python -m build -o dist .
#
#   deploy/build-image.sh [IMAGE]          IMAGE defaults to localhost/bundle-serve:VERSION
#
# Environment (all optional):
#   COMPONENTS    the packages your bundles pin, as the Containerfile takes them
#   CHECK_BUNDLE  a built bundle to verify and serve from the image
#   CHECK_SOURCES a folder of component sources for that check, mounted read-only and put on
#                 PYTHONPATH (example_bundles/custom_layer/src for that example's bundle)
#   PUSH          docker://HOST[:PORT]/REPO:TAG to push the image to after the checks (a loopback
#                 registry is spoken to over plain HTTP)
#   ARCHIVE       a file to write the image to as an OCI archive (skopeo copy oci-archive:...)
#   STORAGE       buildah's storage root (default /var/lib/bundler-image/storage); the image
#                 stays there: buildah --root STORAGE --storage-driver vfs images
#   WORK          scratch folder (default: a new one under /var/tmp, removed at the end)
#   PYTHON        the Python 3.11 whose pip fills the wheelhouse (default python3)
#   MIRROR        the Debian mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
for tool in debootstrap buildah chroot mount curl; do
  command -v "$tool" >/dev/null || die "needs $tool: apt-get install debootstrap buildah curl"
done
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$PYTHON is not Python 3.11, the image's Python: set PYTHON"
shopt -s nullglob
wheels=(dist/keras_bundler-*-py3-none-any.whl)
[ ${#wheels[@]} = 1 ] || die "needs exactly one wheel in dist/ (python -m build -o dist .)"
wheel=$PWD/${wheels[0]}
version=$(basename "$wheel" | cut -d- -f2)
image=${1:-localhost/bundle-serve:$version}
storage=${STORAGE:-/var/lib/bundler-image/storage}
buildah=(buildah --root "$storage" --runroot "$storage.run" --storage-driver vfs)

if [ -n "${WORK:-}" ]; then work=$WORK; mkdir -p "$work"; keep=1; else
  work=$(mktemp -d /var/tmp/bundler-image.XXXXXX); keep=0; fi
mounts=()
container=""
serving=""
cleanup() {
  [ -n "$serving" ] && kill "$serving" 2>/dev/null && wait "$serving" 2>/dev/null
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -R "${mounts[i]}" || true; done
  [ -n "$container" ] && "${buildah[@]}" rm "$container" >/dev/null
  if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "debootstrap: a Debian bookworm root filesystem with Python 3.11"
rootfs=$work/rootfs
if [ ! -x "$rootfs/usr/bin/python3" ]; then
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
    "${MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
fi
base=localhost/bundler-base:bookworm
from=$("${buildah[@]}" from scratch)
"${buildah[@]}" copy --quiet "$from" "$rootfs" / >/dev/null
"${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd '["/bin/bash"]' "$from"
"${buildah[@]}" commit --quiet --rm "$from" "$base" >/dev/null

step "the wheelhouse: keras-bundler[serve] ${COMPONENTS:-} and every dependency"
house=$work/wheels
mkdir -p "$house"
cp "$wheel" "$house/"
# shellcheck disable=SC2086  # COMPONENTS is a list of requirements, split as the Containerfile does
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$house" \
  "$wheel[serve]" ${COMPONENTS:-}

step "buildah build deploy/Containerfile -> $image"
"${buildah[@]}" build --quiet --isolation chroot --pull=never --layers=false \
  --build-arg BASE="$base" --build-arg PIP_OPTIONS=--no-index \
  --build-arg COMPONENTS="${COMPONENTS:-}" -f deploy/Containerfile -t "$image" "$house" >/dev/null
user=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
echo "user $user, $("${buildah[@]}" images --format '{{.Size}}' "$image")"
case $user in 0 | 0:* | root* | "") die "the image runs as root ($user)" ;; esac

step "checks, in a chroot of the image as user $user"
container=$("${buildah[@]}" from --pull-never "$image")
root=$("${buildah[@]}" mount "$container")
mount -t proc proc "$root/proc" && mounts+=("$root/proc")
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" && mounts+=("$root/dev")
as_user() {  # the image's environment and user; no host variables leak in
  chroot --userspec="$user" "$root" /usr/bin/env -i PATH=/opt/bundler/bin:/usr/bin:/bin \
    HOME=/home/bundler TF_CPP_MIN_LOG_LEVEL=3 PYTHONDONTWRITEBYTECODE=1 \
    ${pythonpath:+PYTHONPATH=$pythonpath} "$@"
}
pythonpath=""
printf 'uid %s, ' "$(as_user id -u)"
as_user bundle --version
as_user bundle env >dist/image-env.txt
grep -E '^(keras-bundler|tensorflow|keras|kserve)==' dist/image-env.txt

if [ -n "${CHECK_BUNDLE:-}" ]; then
  mount --bind "$CHECK_BUNDLE" "$root/mnt/models" && mounts+=("$root/mnt/models")
  mount -o remount,bind,ro "$root/mnt/models"
  if [ -n "${CHECK_SOURCES:-}" ]; then
    mkdir -p "$root/opt/components"
    mount --bind "$CHECK_SOURCES" "$root/opt/components" && mounts+=("$root/opt/components")
    mount -o remount,bind,ro "$root/opt/components"
    pythonpath=/opt/components
  fi
  as_user bundle verify /mnt/models
  if as_user touch /mnt/models/written 2>/dev/null; then die "the bundle mount is writable"; fi
  echo "a write into /mnt/models is refused"
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_user bundle serve /mnt/models --host 127.0.0.1 --port "$port" >"$work/serve.log" 2>&1 &
  serving=$!
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1 && break
    kill -0 "$serving" 2>/dev/null || { cat "$work/serve.log" >&2; die "bundle serve stopped"; }
    sleep 1
  done
  curl -fsS "http://127.0.0.1:$port/v2/health/ready" >/dev/null \
    || { cat "$work/serve.log" >&2; die "bundle serve was not ready in 300 s"; }
  name=$(as_user bundle inspect /mnt/models --json | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["name"])')
  echo "bundle serve is ready: $(curl -fsS "http://127.0.0.1:$port/v2/models/$name")"
  kill "$serving" && wait "$serving" || true
  serving=""
fi

if [ -n "${ARCHIVE:-}" ]; then
  step "the image as an OCI archive: $ARCHIVE"
  "${buildah[@]}" push --quiet "$image" "oci-archive:$ARCHIVE:$image"
fi
if [ -n "${PUSH:-}" ]; then
  step "push to $PUSH"
  tls=true
  case $PUSH in docker://127.0.0.1:* | docker://localhost:* | docker://\[::1\]:*) tls=false ;; esac
  "${buildah[@]}" push --quiet --tls-verify="$tls" "$image" "$PUSH"
fi
step "built $image"
echo "image:   ${buildah[*]} images $image"
echo "its env: dist/image-env.txt (bundle verify BUNDLE --env dist/image-env.txt)"
