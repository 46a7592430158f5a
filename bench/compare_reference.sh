#!/usr/bin/env bash
# Same evaluation workload, two runners, one machine, one run:
#   K episodes of the built-in world served over the ALFWorld-style HTTP
#   protocol (`mpo-run serve-env builtin`), an agent behind a chat server
#   that answers after a fixed latency (bench/fixed_latency_chat.py);
#   run by mpo-run (`eval` stage) and by bench/reference_loop.py (the
#   released code's style: one process, one episode and one request at a time).
# Prints wall time and client CPU time (user+sys) of each, and the ratios;
# writes them as JSON lines to $MPO_BENCH_RESULTS/compare.jsonl (default
# target/bench-results/) for bench/benchmarks.py.
#
#   bench/compare_reference.sh [EPISODES=40] [LATENCY_MS=50]
# Needs: cargo, python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
K="${1:-40}"
LAT="${2:-50}"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/mpo-run"
RESULTS="${MPO_BENCH_RESULTS:-${CARGO_TARGET_DIR:-target}/bench-results}"
mkdir -p "$RESULTS"
ENV_PORT="${ENV_PORT:-18801}"
CHAT_PORT="${CHAT_PORT:-18802}"
work="$(mktemp -d)"
"$BIN" serve-env builtin --port "$ENV_PORT" >"$work/env.log" 2>&1 &
envpid=$!
python3 bench/fixed_latency_chat.py --port "$CHAT_PORT" --latency-ms "$LAT" >"$work/chat.log" 2>&1 &
chatpid=$!
trap 'kill $envpid $chatpid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$ENV_PORT" "$CHAT_PORT" <<'PY'
import socket, sys, time
for port in sys.argv[1:]:
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close(); break
        except OSError:
            if time.time() > deadline: sys.exit(f"port {port} never opened")
            time.sleep(0.1)
PY
cat >"$work/compare.toml" <<TOML
[experiment]
name = "compare"
results_dir = "$work/results"
reports_dir = "$work/reports"

[models.agent]
kind = "openai"
base_url = "http://127.0.0.1:$CHAT_PORT/v1"
model = "fixed"
max_concurrency = 256

[envs.alf]
kind = "agentgym"
url = "http://127.0.0.1:$ENV_PORT"
env = "alfworld"
concurrency = 256

[eval]
agents = ["agent"]
envs = ["alf"]
splits = ["seen"]
tasks = $K
concurrency = 256
TOML
python3 - "$BIN" "$work/compare.toml" "$K" "$ENV_PORT" "$CHAT_PORT" "$LAT" "$RESULTS/compare.jsonl" <<'PY'
import json, os, resource, subprocess, sys, time
binary, spec, k, env_port, chat_port, lat, results = sys.argv[1:]
def measure(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu
ref = measure([sys.executable, "bench/reference_loop.py", "--env", f"http://127.0.0.1:{env_port}",
               "--chat", f"http://127.0.0.1:{chat_port}/v1", "--episodes", k])
ours = measure([binary, spec])
print(f"workload: {k} episodes x 30 steps, chat latency {lat} ms, built-in world over HTTP")
print(f"reference loop (python, sequential): wall {ref[0]:8.2f} s   client CPU {ref[1]:7.2f} s")
print(f"mpo-run eval                       : wall {ours[0]:8.2f} s   client CPU {ours[1]:7.2f} s")
print(f"speed-up (wall): {ref[0] / ours[0]:.1f}x   client CPU ratio (reference / mpo-run): {ref[1] / max(ours[1], 1e-9):.2f}")
detail = f"{k} episodes x 30 steps, chat latency {lat} ms, built-in world over HTTP"
figures = [
    ("reference loop wall time (python, sequential)", ref[0], "s"),
    ("mpo-run eval wall time", ours[0], "s"),
    ("speed-up (wall, reference / mpo-run)", ref[0] / ours[0], "x"),
    ("reference loop client CPU (user+sys)", ref[1], "s"),
    ("mpo-run client CPU (user+sys)", ours[1], "s"),
    ("client CPU ratio (reference / mpo-run)", ref[1] / max(ours[1], 1e-9), "x"),
]
with open(results, "w") as f:
    for name, value, unit in figures:
        f.write(json.dumps({"bench": "compare", "figure": name, "value": value, "unit": unit, "detail": detail, "quick": False}) + "\n")
PY
