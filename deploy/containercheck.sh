#!/usr/bin/env bash
# Builds deploy/Containerfile with podman and runs the image's `aula serve` to a working room,
# on a machine that cannot pull base images or start OCI containers (this development VM):
# the base image is made locally with mmdebstrap and imported under the name the Containerfile
# names; the build uses chroot isolation; the built image's filesystem is then run with chroot
# as user aula (crun here refuses cgroups in hybrid mode and setrlimit). Run as root, after
# `cargo build --release -p aula`; installs podman and mmdebstrap with apt-get if missing; not
# part of the test command. Everything it makes is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d)
R=$W/root
cleanup() {
  pkill -f "aula --config /etc/aula/aula.toml serve" 2>/dev/null || true
  sleep 1
  umount "$R/proc" "$R/dev" 2>/dev/null || true
  rm -rf "$W"
  podman rmi -f localhost/aula docker.io/library/debian:bookworm-slim >/dev/null 2>&1 || true
}
trap cleanup EXIT
command -v podman >/dev/null && command -v mmdebstrap >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman mmdebstrap >/dev/null
echo "== base image: debian bookworm, made here"
mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$W/bookworm.tar"
podman import "$W/bookworm.tar" docker.io/library/debian:bookworm-slim >/dev/null
echo "== podman build -f deploy/Containerfile"
podman build --quiet --pull=never --isolation=chroot --network host -f deploy/Containerfile -t aula . >/dev/null
echo "== the image's filesystem, run as its USER with its ENTRYPOINT"
M=$(podman image mount localhost/aula)
cp -a "$M" "$R"
podman image unmount localhost/aula >/dev/null
(cd web && node -e "import('./tests/helpers.mjs').then(({ makeCert }) => { const c = makeCert('$W', 'site'); require('fs').writeFileSync('$W/spki', c.spki); })")
mkdir -p "$R/tls" && cp "$W/site.pem" "$W/site.key" "$R/tls/" && chmod 0644 "$R/tls/site.key"
mount --bind /proc "$R/proc" && mount --bind /dev "$R/dev"
export AULA_AUTH__API_SECRET=check-api-secret-0123456789abcdefghij
export AULA_SIGNING__KEYS='{k1="check-signing-key-0123456789abcdefghij"}'
export AULA_TURN__SECRET=check-turn-secret-0123456789
# Loopback and the filesystem backend for the check (the image's aula.toml binds 0.0.0.0 and
# stores in R2).
export AULA_HTTP__BIND=127.0.0.1:8443 AULA_HTTP__TLS_CERT=/tls/site.pem AULA_HTTP__TLS_KEY=/tls/site.key
export AULA_MEDIA__BIND=127.0.0.1:7890 AULA_MEDIA__PUBLIC_IP=127.0.0.1 AULA_STORAGE__BACKEND=fs
in_image() { chroot --userspec=aula:aula "$R" /usr/local/bin/aula --config /etc/aula/aula.toml "$@"; }
in_image config >/dev/null
in_image serve >"$W/serve.out" 2>"$W/serve.log" &
for _ in $(seq 100); do grep -q "aula listening" "$W/serve.out" && break; sleep 0.2; done
cat "$W/serve.out"
T1=$(in_image token --room walk --identity tutor --publish --publish-data)
T2=$(in_image token --room walk --identity student --publish)
(cd web && node ../deploy/walkthrough.mjs https://127.0.0.1:8443 "$(cat "$W/spki")" "$T1" "$T2")
echo "== the image serves a working room"
