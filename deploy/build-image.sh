#!/usr/bin/env bash
# Build the repository's Dockerfile for real and smoke-test the image, without a
# Docker engine. Opt-in: CI never runs it; it needs root, Debian's mirror and PyPI, and
# takes a few minutes (first run about 100 s here, see docs/deployment.md).
#
#   sudo bash deploy/build-image.sh
#
# 1. deps:  installs buildah and debootstrap from Debian if missing (apt-get update once).
# 2. base:  debootstraps Debian bookworm (Python 3.11, like python:3.11-slim) with
#           python3, python3-venv, python3-pip, python-is-python3 and ca-certificates,
#           and stores it as docker.io/library/python:3.11-slim so the Dockerfile's FROM
#           resolves locally. Cached in the work dir: a second run skips this.
# 3. build: buildah build --isolation chroot --pull=never -t tasktracker:latest, with the
#           host's CA bundle and package index (pip config) mounted into the RUN steps.
# 4. smoke: against the local PostgreSQL, RabbitMQ and Redis (127.0.0.1) with the README's
#           production settings, in a fresh database tt_image_<random>: `flask db upgrade`
#           (migrate role), the image's default CMD (the granian REST API) and a Celery
#           worker; waits for GET /ready = 200 (and the worker's "ready."), checks
#           /health = 200, POST /api/auth/register = 201 and the image's HEALTHCHECK
#           command, stops both with SIGTERM by pid, drops the database, the queue and
#           the Redis keys.
# Prints one summary line with the time of each phase and the total.
#
# Settings (environment):
#   BUILD_IMAGE_WORKDIR  work dir: base rootfs cache, buildah storage, logs
#                        (default /var/tmp/tasktracker-image; `rm -rf` it to start over)
#   IMAGE                tag of the built image (default tasktracker:latest)
#   DEBIAN_MIRROR        debootstrap mirror (default http://deb.debian.org/debian)
#   PGHOST PGPORT PGUSER PostgreSQL superuser connection (default 127.0.0.1 5432 postgres)
#   AMQP_URL             RabbitMQ (default amqp://guest:guest@127.0.0.1:5672//)
#   REDIS_HOST_URL       Redis (default redis://127.0.0.1:6379)
#   READY_TIMEOUT        seconds to wait for /ready (default 120)
#
# Images live in the work dir's own storage (vfs driver), not the system's:
#   buildah --root "$BUILD_IMAGE_WORKDIR/storage" --runroot "$BUILD_IMAGE_WORKDIR/run" \
#           --storage-driver vfs images
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR="${BUILD_IMAGE_WORKDIR:-/var/tmp/tasktracker-image}"
IMAGE="${IMAGE:-tasktracker:latest}"
BASE_IMAGE="docker.io/library/python:3.11-slim"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export PGHOST PGPORT PGUSER
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672//}"
REDIS_HOST_URL="${REDIS_HOST_URL:-redis://127.0.0.1:6379}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
export BUILDAH_ISOLATION=chroot   # no OCI runtime, no user namespace: plain chroot

START=$SECONDS
PHASE_START=$SECONDS
TIMES=()
log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*" >&2; exit 1; }
phase() { PHASE_START=$SECONDS; log "== $1"; }
done_phase() { TIMES+=("$1 $((SECONDS - PHASE_START))s"); log "== $1 done in $((SECONDS - PHASE_START))s"; }
BH=(buildah --root "$WORKDIR/storage" --runroot "$WORKDIR/run" --storage-driver vfs)
bh() { "${BH[@]}" "$@"; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and buildah's vfs storage need it)"
mkdir -p "$WORKDIR/logs"

# --- stopping the roles and cleaning up (on any exit) -----------------------------------
web_pid="" worker_pid="" ctr="" db="" STOP_RC="" SUMMARY=""
# `buildah run` answers SIGTERM by SIGKILLing its command, so a role is stopped like
# `docker stop` would: SIGTERM to the command's own pid, found under buildah's
# (buildah -> buildah-chroot-runtime -> buildah-chroot-exec -> the command).
command_pid() {
    local pid="$1" args
    while args=$(ps -o args= -p "$pid") && [[ "${args%% *}" == *buildah* ]]; do
        pid=$(ps -o pid= --ppid "$pid" | head -n 1 | tr -d ' ')
        [ -n "$pid" ] || return 1
    done
    echo "$pid"
}
descendants() { local p; for p in $(ps -o pid= --ppid "$1"); do echo "$p"; descendants "$p"; done; }
stop() {  # buildah-run-pid name: SIGTERM to the command, up to 30 s, then SIGTERM to buildah
    local pid="$1" name="$2" cpid tree rc=0 left="" p
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    tree=$(descendants "$pid")
    cpid=$(command_pid "$pid") || cpid=""
    kill -TERM "${cpid:-$pid}" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid ${cpid:-?}) still running 30 s after SIGTERM: killing it through buildah (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    for p in $tree; do   # a child process the command left behind (its workers, say)
        if kill -0 "$p" 2>/dev/null; then left="$left $p"; kill -KILL "$p" 2>/dev/null || true; fi
    done
    [ -z "$left" ] || log "$name left processes behind after its exit: killed$left"
    log "stopped $name (pid ${cpid:-?}, buildah run pid $pid): exit status $rc"
    STOP_RC=$rc
}
cleanup() {
    local rc=$?
    set +e
    stop "$web_pid" web
    stop "$worker_pid" worker
    if [ -n "$ctr" ] && bh inspect "$ctr" >/dev/null 2>&1; then
        in_image python - <<'EOF' || log "could not delete the run's queue and Redis keys"
import os, redis
from kombu import Connection
with Connection(os.environ["CELERY_BROKER_URL"], connect_timeout=5) as conn:
    ch = conn.default_channel
    for name in (os.environ["CELERY_TASK_QUEUE"], os.environ["SOCKETIO_CHANNEL"]):
        ch.queue_delete(name)
        ch.exchange_delete(name)
r = redis.Redis.from_url(os.environ["REDIS_URL"])
for prefix in (os.environ["PRESENCE_KEY_PREFIX"], os.environ["LIST_CACHE_KEY_PREFIX"]):
    keys = list(r.scan_iter(match=prefix + "*"))
    if keys:
        r.delete(*keys)
EOF
        bh rm "$ctr" >/dev/null
    fi
    if [ -n "$db" ]; then
        psql -d postgres -qAtc "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" && log "dropped database $db"
    fi
    if [ "$rc" = 0 ]; then
        log "SUMMARY: OK: $SUMMARY in $((SECONDS - START))s (${TIMES[*]})"
    else
        log "SUMMARY: FAILED (exit $rc) after $((SECONDS - START))s (${TIMES[*]:-no phase done}): see the FAILED line above and $WORKDIR/logs"
    fi
    exit "$rc"
}
trap cleanup EXIT

# The services the smoke test runs against must answer before minutes go into a build.
answers() {  # url: a TCP connection to its host and port opens within 3 s
    python3 -c 'import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
socket.create_connection((u.hostname, u.port), 3).close()' "$1" 2>/dev/null
}
answers "postgresql://$PGHOST:$PGPORT" || die "PostgreSQL does not answer at $PGHOST:$PGPORT (start it first)"
answers "$AMQP_URL" || die "RabbitMQ does not answer at $AMQP_URL (start it first)"
answers "$REDIS_HOST_URL" || die "Redis does not answer at $REDIS_HOST_URL (start it first)"

# --- 1. deps --------------------------------------------------------------------------
phase deps
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >"$WORKDIR/logs/apt.log" 2>&1 \
        || die "apt-get update failed (no route to Debian's mirror?): see $WORKDIR/logs/apt.log"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >>"$WORKDIR/logs/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed: see $WORKDIR/logs/apt.log"
fi
log "$(buildah --version)"
done_phase deps

# --- 2. base image: Debian bookworm's Python 3.11 as python:3.11-slim ------------------
phase base
if bh inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE already in $WORKDIR/storage: skipped"
else
    if [ ! -s "$WORKDIR/base-rootfs.tar" ]; then
        rootfs="$WORKDIR/rootfs"
        rm -rf "$rootfs"
        log "debootstrap bookworm into $rootfs (a few minutes; log: $WORKDIR/logs/debootstrap.log)"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORKDIR/logs/debootstrap.log" 2>&1 \
            || die "debootstrap failed: see $WORKDIR/logs/debootstrap.log"
        chroot "$rootfs" python --version || die "python does not run in the new rootfs"
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
        # /dev, /proc and /sys are provided at run time; the device nodes stay out.
        tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -cf "$WORKDIR/base-rootfs.tar.part" .
        mv "$WORKDIR/base-rootfs.tar.part" "$WORKDIR/base-rootfs.tar"
        rm -rf "$rootfs"
    else
        log "reusing $WORKDIR/base-rootfs.tar"
    fi
    bh rm tt-base-import >/dev/null 2>&1 || true   # left by an interrupted run
    base_ctr=$(bh from --name tt-base-import scratch)
    mnt=$(bh mount "$base_ctr")
    tar --numeric-owner -C "$mnt" -xpf "$WORKDIR/base-rootfs.tar"
    bh umount "$base_ctr" >/dev/null
    # What python:3.11-slim's own config sets (its python is /usr/local/bin, ours /usr/bin).
    bh config --env LANG=C.UTF-8 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd python3 "$base_ctr"
    bh commit --rm --quiet "$base_ctr" "$BASE_IMAGE" >/dev/null
    log "stored $BASE_IMAGE"
fi
done_phase base

# --- 3. build the Dockerfile -----------------------------------------------------------
phase build
# The RUN steps reach the same package index as the host's pip, over its CA bundle.
host_index="${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}"
case "$host_index" in
    http://*|https://*) ;;
    *) host_index=https://pypi.org/simple ;;   # pip's default (file:// indexes stay on the host)
esac
cat >"$WORKDIR/pip.conf" <<EOF
[global]
index-url = $host_index
cert = $CA_BUNDLE
timeout = 180
EOF
log "pip index inside the build: $host_index (log: $WORKDIR/logs/build.log)"
# --format docker keeps HEALTHCHECK (the OCI format has no such field).
if ! bh build --isolation chroot --pull=never --format docker -t "$IMAGE" -f Dockerfile \
        -v "$CA_BUNDLE:$CA_BUNDLE:ro" -v "$WORKDIR/pip.conf:/etc/pip.conf:ro" \
        "$REPO" >"$WORKDIR/logs/build.log" 2>&1; then
    tail -n 30 "$WORKDIR/logs/build.log" >&2
    die "buildah build failed: see $WORKDIR/logs/build.log"
fi
bh rmi --prune >/dev/null 2>&1 || true   # the previous build, now untagged
size=$(bh images --format '{{.Size}}' "$IMAGE" | head -n 1)
log "built $IMAGE ($size)"
done_phase build

# --- 4. smoke test the roles against the local services --------------------------------
phase smoke
run_id="$(date +%s)$RANDOM"
db="tt_image_${run_id}"
ctr="tt-smoke-${run_id}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }   # 48 characters
envs=(
    -e TASKTRACKER_ENV=production
    -e "JWT_SECRET_KEY=$(secret)" -e "SECRET_KEY=$(secret)"
    -e "DATABASE_URL=postgresql+psycopg://${PGUSER}@${PGHOST}:${PGPORT}/${db}"
    -e "CELERY_BROKER_URL=$AMQP_URL" -e "SOCKETIO_MESSAGE_QUEUE=$AMQP_URL"
    -e "REDIS_URL=$REDIS_HOST_URL/0" -e "RATELIMIT_STORAGE_URI=$REDIS_HOST_URL/1"
    -e "CELERY_TASK_QUEUE=tt-image-${run_id}" -e "SOCKETIO_CHANNEL=tt-image-${run_id}-sio"
    -e "PRESENCE_KEY_PREFIX=tt-image-${run_id}:presence" -e "LIST_CACHE_KEY_PREFIX=tt-image-${run_id}:lists"
    -e "HOT_CACHE_CHANNEL=tt-image-${run_id}:hotcache"
    -e "GRANIAN_HOST=127.0.0.1" -e "GRANIAN_PORT=$port" -e "PORT=$port"
)
RUN_ARGS=(run --isolation chroot --network host)   # host network: 127.0.0.1 is the host's
in_image() { bh "${RUN_ARGS[@]}" "${envs[@]}" "$ctr" -- "$@"; }


psql -d postgres -qAtc "SELECT 1" >/dev/null || die "PostgreSQL does not answer at $PGHOST:$PGPORT as $PGUSER"
psql -d postgres -qAtc "CREATE DATABASE ${db}"
log "created database $db"
bh from --pull=never --name "$ctr" "$IMAGE" >/dev/null

log "migrate: flask db upgrade"
in_image flask db upgrade >"$WORKDIR/logs/migrate.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/logs/migrate.log" >&2; die "flask db upgrade failed"; }

# The web role runs the image's own default command (CMD), as `docker run IMAGE` would.
# image_config EXPR: a list computed from the image's Docker config `c`, NUL-separated.
image_config() {
    bh inspect --type image "$IMAGE" \
        | python3 -c 'import json, sys; c = json.load(sys.stdin)["Docker"]["config"]; sys.stdout.write("\0".join('"$1"'))'
}
mapfile -d '' -t cmd < <(image_config 'c.get("Cmd") or []')
[ ${#cmd[@]} -gt 0 ] || die "the image has no CMD"
log "web: ${cmd[*]} on 127.0.0.1:$port"
"${BH[@]}" "${RUN_ARGS[@]}" "${envs[@]}" "$ctr" -- "${cmd[@]}" >"$WORKDIR/logs/web.log" 2>&1 &
web_pid=$!
log "worker: celery -A celery_worker.celery worker -n image1@%h"
"${BH[@]}" "${RUN_ARGS[@]}" "${envs[@]}" "$ctr" -- \
    celery -A celery_worker.celery worker -n image1@%h --loglevel=info >"$WORKDIR/logs/worker.log" 2>&1 &
worker_pid=$!

deadline=$((SECONDS + READY_TIMEOUT))
ready_code="" ready_body=""
while [ $SECONDS -lt $deadline ]; do
    kill -0 "$web_pid" 2>/dev/null || { tail -n 30 "$WORKDIR/logs/web.log" >&2; die "the web role exited"; }
    kill -0 "$worker_pid" 2>/dev/null || { tail -n 30 "$WORKDIR/logs/worker.log" >&2; die "the worker exited"; }
    ready_body=$(curl -s -m 5 -w '\n%{http_code}' "http://127.0.0.1:$port/ready" || true)
    ready_code=${ready_body##*$'\n'}
    ready_body=${ready_body%$'\n'*}
    ready_body=${ready_body%$'\n'}
    [ "$ready_code" = 200 ] && grep -q ' ready\.' "$WORKDIR/logs/worker.log" && break
    sleep 1
done
[ "$ready_code" = 200 ] || { tail -n 30 "$WORKDIR/logs/web.log" >&2; die "GET /ready answered '${ready_code:-nothing}' after ${READY_TIMEOUT}s: $ready_body"; }
grep -q ' ready\.' "$WORKDIR/logs/worker.log" || { tail -n 30 "$WORKDIR/logs/worker.log" >&2; die "the worker did not report ready"; }
log "GET /ready: 200 $ready_body"
health_code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
[ "$health_code" = 200 ] || die "GET /health answered '$health_code'"
log "GET /health: 200"
grep -q "\.> tt-image-${run_id} " "$WORKDIR/logs/worker.log" || die "the worker does not consume the queue tt-image-${run_id}"
reg_code=$(curl -s -m 10 -o "$WORKDIR/logs/register.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d '{"username": "image-smoke", "email": "image-smoke@example.com", "password": "correct-horse-9"}' \
    "http://127.0.0.1:$port/api/auth/register" || true)
[ "$reg_code" = 201 ] || die "POST /api/auth/register answered '$reg_code': $(cat "$WORKDIR/logs/register.json")"
log "POST /api/auth/register: 201 (a write through the image's psycopg and argon2)"
# HEALTHCHECK ["CMD", ...] runs as is, ["CMD-SHELL", "..."] through /bin/sh -c.
mapfile -d '' -t check < <(image_config '(lambda t: t[1:] if t[:1] == ["CMD"] else ["/bin/sh", "-c"] + t[1:] if t[:1] == ["CMD-SHELL"] else [])((c.get("Healthcheck") or {}).get("Test") or [])')
if [ ${#check[@]} -gt 0 ]; then
    in_image "${check[@]}" || die "the image's HEALTHCHECK command failed"
    log "HEALTHCHECK command: ok"
fi
log "worker: $(grep -m1 ' ready\.' "$WORKDIR/logs/worker.log" | sed 's/^.*\] //')"
stop "$web_pid" web; web_pid=""; web_rc=$STOP_RC
stop "$worker_pid" worker; worker_pid=""; worker_rc=$STOP_RC
done_phase smoke

SUMMARY="$IMAGE ($size) built and smoke-tested (/ready 200, /health 200, register 201, web exit $web_rc and worker exit $worker_rc on SIGTERM)"
# cleanup (the EXIT trap) then prints the summary line with the total time.
