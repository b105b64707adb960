# Shared by scripts/demo and scripts/test: install what runyard needs on a
# fresh Debian machine, idempotently. Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd (log: /tmp/runyard-dockerd.log)"
  as_root sh -c 'nohup dockerd >/tmp/runyard-dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "dockerd did not start; see /tmp/runyard-dockerd.log"
  return 1
}

build_runner_image() {
  local tf=()
  [ -x /usr/local/bin/terraform ] && tf=(--with-terraform /usr/local/bin/terraform)
  log "building the runner image offline"
  "$VENV/bin/runyard" runner-image build "${tf[@]}"
}

# A plain Debian host image (minbase, python3), built offline from Debian's
# packages: the AWS user data runs in it in the tests, as on a fresh instance.
TEST_HOST_IMAGE=runyard/test-host:bookworm
build_test_host_image() {
  if docker image inspect "$TEST_HOST_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "building $TEST_HOST_IMAGE with debootstrap"
  local rootfs
  rootfs=$(mktemp -d /tmp/runyard-rootfs-XXXXXX)
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd,libatomic1 \
    bookworm "$rootfs" http://deb.debian.org/debian >/tmp/runyard-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /tmp/runyard-debootstrap.log"; return 1; }
  as_root tar -C "$rootfs" -c . | docker import - "$TEST_HOST_IMAGE" >/dev/null
  as_root rm -rf "$rootfs"
}

ensure_venv() {
  local extras=${1:-}
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.installed$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    log "installing runyard${extras} into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$extras"
    touch "$stamp"
  fi
}
