#!/usr/bin/env bash
# The Docker image checked end to end, as a user would use it (not run by CI: it needs a Docker
# engine, the network and several minutes). From the repository root:
#   docker/check.sh           builds the cpu image and checks it, then compose
#   docker/check.sh --cuda    also builds the cuda flavour, as far as this machine allows
#
# It runs the README's Docker commands word for word (tests/test_packaging.py compares them), with
# two additions for machines that cannot reach everything a user's can, both passed to
# `docker build` in BUILD_ARGS (and nowhere else):
# - no registry base image: docker/base.sh builds a local stand-in for python:3.11-slim (and, for
#   --cuda, for the CUDA base), passed as CPU_BASE / CUDA_BASE;
# - pip settings from this environment (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS,
#   PIP_TRUSTED_HOST, PIP_RETRIES): e.g. a local folder of wheels served over HTTP when the CPU
#   torch index is out of reach; PIP_RETRIES=0 is set then, so that pip does not retry that index
#   for every package. On the machine this was checked on (no registry, no CPU torch index):
#     python3 -m http.server --bind 172.17.0.1 8765 --directory /opt/wheels &
#     PIP_FIND_LINKS=http://172.17.0.1:8765/ PIP_TRUSTED_HOST=172.17.0.1 docker/check.sh
#
# Measured and printed: image size and what fills it, the C kernel loaded in the container,
# `docker stop` during the demo (exit 143 in < 2 s, the last records on disk), the rebuild time
# after a one-line source edit (< 10 s), and `docker compose up` (both viewers list the demo's
# runs, the monitor's exit code). Exit status: the number of failed checks.
set -uo pipefail
cd "$(dirname "$0")/.."

# Docker 23+ builds with BuildKit by default (its CLI needs the buildx plugin for it); Debian's
# docker.io (20.10) needs asking.
export DOCKER_BUILDKIT=1
# Debian bookworm packages Compose v1 only (`docker-compose`): route `docker compose` to it.
if ! docker compose version >/dev/null 2>&1 && command -v docker-compose >/dev/null; then
    docker() { if [ "$1" = compose ]; then shift; command docker-compose "$@"; else command docker "$@"; fi; }
fi

FAILED=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
stamp() { date +%s.%N; }
seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
runs_volume() { docker run --rm -v dualwatch-runs:/app/runs dualwatch "$@"; }

# pip retries an index it cannot reach, for every package (seconds each): where the CPU torch index
# that constraints.txt names is out of reach, it is told not to (PIP_FIND_LINKS must then hold torch).
torch_index="$(sed -n 's/^--extra-index-url //p' constraints.txt | head -1)"
if [ -z "${PIP_RETRIES:-}" ] && [ -n "$torch_index" ] && ! curl -sS --max-time 10 -o /dev/null "$torch_index" 2>/dev/null; then
    echo "$torch_index is out of reach: PIP_RETRIES=0"
    PIP_RETRIES=0
fi
BUILD_ARGS=()
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST PIP_RETRIES; do
    if [ -n "${!var:-}" ]; then BUILD_ARGS+=(--build-arg "$var=${!var}"); fi
done
cpu_base="$(sed -n 's/^ARG CPU_BASE=//p' Dockerfile)"
if ! docker image inspect "$cpu_base" >/dev/null 2>&1 && ! docker pull -q "$cpu_base" >/dev/null 2>&1; then
    echo "cannot pull $cpu_base: building a local stand-in (docker/base.sh)"
    standin="$(docker/base.sh)" || exit 1
    BUILD_ARGS+=(--build-arg "CPU_BASE=$standin" --build-arg "CUDA_BASE=$standin")
fi

echo "== build (cpu)"
start=$(stamp)
docker build "${BUILD_ARGS[@]}" -t dualwatch . >/tmp/dualwatch-build.log 2>&1 \
    || { tail -30 /tmp/dualwatch-build.log; echo "FAIL: the cpu image does not build"; exit 1; }
echo "built in $(seconds "$start" "$(stamp)") s"

echo "== size"
size=$(docker image inspect dualwatch --format '{{.Size}}')
echo "dualwatch: $((size / 1000000)) MB"
if [ "$size" -le 2700000000 ]; then pass "image size <= 2.7 GB"; else fail "image size > 2.7 GB"; fi
docker run --rm dualwatch sh -c 'du -sh /opt/venv/lib/python3*/site-packages/* | sort -rh | head -12'

echo "== C kernel"
loaded=$(docker run --rm dualwatch python -c "from dualwatch._host import fused_kernel_built; from dualwatch._formats._codec import codec; from dualwatch import _edge; print(fused_kernel_built(), codec is not None, _edge._edgehost is not None)")
echo "host-stats kernel, scalar codec, edge-map loops loaded: $loaded"
if [ "$loaded" = "True True True" ]; then pass "C kernel, codec and edge loops loaded"; else fail "C parts not loaded"; fi

echo "== docker stop during the demo"
docker rm -f dualwatch >/dev/null 2>&1
docker volume rm -f dualwatch-runs >/dev/null
docker run -d --name dualwatch -v dualwatch-runs:/app/runs dualwatch dualwatch demo --steps 2000 >/dev/null
for _ in $(seq 120); do
    [ "$(docker logs dualwatch 2>&1 | grep -c 'Step')" -ge 2 ] && break
    sleep 1
done
start=$(stamp)
docker stop dualwatch >/dev/null
took=$(seconds "$start" "$(stamp)")
code=$(docker inspect dualwatch --format '{{.State.ExitCode}}')
echo "docker stop: exit $code in $took s"
if [ "$code" = 143 ] && python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 2)" "$took"; then
    pass "docker stop -> 143 in < 2 s"
else
    fail "docker stop -> $code in $took s (want 143 in < 2 s)"
fi
# the last step the job reported, then the last records on disk
last_logged=$(docker logs dualwatch 2>&1 | sed -n 's/.*Step \([0-9][0-9]*\).*/\1/p' | tail -1)
docker rm dualwatch >/dev/null
last_written=$(runs_volume python -c "
import glob, json
(path,) = glob.glob('runs/torch/*/metrics.jsonl')
print(max(json.loads(line)['step'] for line in open(path)))")
echo "last step logged: $last_logged, last step in runs/torch/*/metrics.jsonl: $last_written"
if [ -n "$last_logged" ] && [ -n "$last_written" ] && [ "$last_written" -ge "$last_logged" ]; then
    pass "the last records are on disk"
else
    fail "the last records are not on disk"
fi

echo "== rebuild after a one-line source edit"
cp dualwatch/_demo.py /tmp/dualwatch-demo.py.orig
trap 'cp /tmp/dualwatch-demo.py.orig dualwatch/_demo.py' EXIT
echo "# edited by docker/check.sh at $(date +%s%N)" >>dualwatch/_demo.py  # new each time: no cache hit
start=$(stamp)
docker build "${BUILD_ARGS[@]}" -t dualwatch . >/dev/null 2>&1
took=$(seconds "$start" "$(stamp)")
cp /tmp/dualwatch-demo.py.orig dualwatch/_demo.py
echo "rebuild: $took s"
if python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 10)" "$took"; then pass "rebuild < 10 s"; else fail "rebuild took $took s"; fi
docker build "${BUILD_ARGS[@]}" -t dualwatch . >/dev/null 2>&1  # back to the checked-out source

echo "== docker compose up"
docker compose down -v >/dev/null 2>&1
docker compose up >/tmp/dualwatch-compose.log 2>&1 &
container() { docker compose ps -a -q "$1" 2>/dev/null; }
# the monitor starts once the demo has written its first record
for _ in $(seq 150); do
    [ -n "$(container monitor)" ] && break
    sleep 2
done
train=$(container train)
monitor=$(container monitor)
[ -n "$train" ] && timeout 600 docker wait "$train" >/dev/null
for service in visualdl tensorboard; do
    health=$(docker inspect "$(container $service)" --format '{{.State.Health.Status}}' 2>/dev/null)
    if [ "$health" = healthy ]; then pass "$service healthy"; else fail "$service health: ${health:-no container}"; fi
done
for url in http://localhost:8040/app/api/runs http://localhost:6006/data/runs; do
    for _ in $(seq 30); do  # TensorBoard rescans its logdir every few seconds
        body=$(curl -sS --max-time 10 -w ' HTTP %{http_code}' "$url")
        case "$body" in *torch*paddle*"HTTP 200" | *paddle*torch*"HTTP 200") break ;; esac
        sleep 2
    done
    echo "$url: $body"
    case "$body" in
        *torch*paddle*"HTTP 200" | *paddle*torch*"HTTP 200") pass "$url lists the demo's runs" ;;
        *) fail "$url does not list the demo's runs" ;;
    esac
done
code=$([ -n "$monitor" ] && timeout 600 docker wait "$monitor")
echo "-- the monitor's output"
docker compose logs --no-color monitor | tail -40
echo "monitor exit code: ${code:-none}"
if [ "${code:-}" = 0 ]; then pass "monitor exited 0 (healthy)"; else fail "monitor exit code ${code:-none} (want 0)"; fi
docker compose down -v >/dev/null 2>&1

if [ "${1:-}" = --cuda ]; then
    echo "== build (cuda): how far it gets"
    if docker build "${BUILD_ARGS[@]}" --build-arg FLAVOUR=cuda -t dualwatch:cuda . >/tmp/dualwatch-cuda.log 2>&1; then
        pass "the cuda image builds"
        if command -v nvidia-smi >/dev/null; then
            docker run --rm --gpus all dualwatch:cuda
        else
            echo "no GPU here: not run"
        fi
    else
        grep -E "ERROR|error:|No matching|Could not" /tmp/dualwatch-cuda.log | tail -8
        fail "the cuda image does not build (log: /tmp/dualwatch-cuda.log)"
    fi
fi

echo "== $FAILED check(s) failed"
exit "$FAILED"
