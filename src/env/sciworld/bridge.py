#!/usr/bin/env python3
"""mpo-run ScienceWorld bridge: one simulator instance behind a
line-delimited JSON protocol on stdin/stdout.

Embedded in the mpo-run binary (src/env/sciworld/bridge.py) and written to a
cache file at start. The runner supervises it; see src/env/sciworld/worker.rs.

Protocol (one JSON object per line; every reply carries the request's "id"
and "ok"; a failed request answers {"ok": false, "error": "..."}):
  startup        -> {"op": "hello", "ok": true, "pid", "version", "protocol"}
                    or {"op": "hello", "ok": false, "fatal": true, "error"}
  {"op": "load", "task", "variation", "simplification", "gold"}
                 -> {"task_desc", "observation", "gold": [...] | null}
                    (env.load then env.reset, as the released code does)
  {"op": "step", "action"}
                 -> {"observation", "raw_score", "completed", "moves"}
  {"op": "ping"} -> {"pid"}
  {"op": "exit"} -> closes the simulator and exits
`python3 bridge.py --check` prints one JSON line about the installation.
"""
import json
import os
import subprocess
import sys
import threading
import time

PROTOCOL = 1
ENV_STEP_LIMIT = int(os.environ.get("MPO_SCIWORLD_ENV_STEP_LIMIT", "200"))
DEBUG = os.environ.get("MPO_SCIWORLD_DEBUG") == "1"

_env = None


def _protocol_channel():
    """The protocol gets a private copy of stdout; fd 1 then points at stderr
    so that stray prints (py4j, the JVM, warnings) cannot corrupt it."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def _cleanup():
    global _env
    env, _env = _env, None
    if env is None:
        return
    try:
        env._gateway.java_process.kill()
    except Exception:
        pass


def _watchdog(parent):
    """Exit (taking the JVM along) as soon as the runner is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            _cleanup()
            os._exit(3)


def _task_desc(env):
    td = env.taskdescription()
    marker = "Task Description:\n"
    if marker in td:
        td = td.split(marker, 1)[1]
    return td.strip()


def _handle(env, req, out):
    op = req.get("op")
    if op == "load":
        gold = bool(req.get("gold", False))
        env.load(req["task"], int(req["variation"]),
                 simplificationStr=req.get("simplification", "easy"),
                 generateGoldPath=gold)
        obs, _info = env.reset()
        seq = list(env.get_gold_action_sequence()) if gold else None
        return {"task_desc": _task_desc(env), "observation": obs, "gold": seq}
    if op == "step":
        action = req["action"]
        if DEBUG and action.startswith("__debug_"):
            if action == "__debug_hang__":
                time.sleep(3600)
            elif action == "__debug_garbage__":
                out.write("this is not json\n")
                out.flush()
                time.sleep(3600)
            elif action == "__debug_exit__":
                _cleanup()
                os._exit(7)
        # The released loop's patched step without the per-step enumeration
        # of valid actions (which it discards): same simulator calls, same
        # observation, score and completion flag.
        obs = env.server.step(action)
        raw = float(env.server.getScore())
        completed = bool(env.server.getCompleted())
        moves = int(env.get_num_moves())
        return {"observation": obs, "raw_score": raw, "completed": completed,
                "moves": moves}
    if op == "ping":
        return {"pid": os.getpid()}
    raise ValueError(f"unknown op {op!r}")


def _check():
    res = {"python": sys.version.split()[0], "scienceworld": None, "java": None}
    try:
        import scienceworld
        res["scienceworld"] = getattr(scienceworld, "__version__", "unknown")
    except Exception as e:  # noqa: BLE001
        res["scienceworld_error"] = f"{type(e).__name__}: {e}"
    try:
        p = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            lines = (p.stderr or p.stdout).strip().splitlines()
            res["java"] = lines[0] if lines else "unknown"
        else:
            res["java_error"] = (p.stderr or p.stdout).strip()[-300:]
    except Exception as e:  # noqa: BLE001
        res["java_error"] = f"{type(e).__name__}: {e}"
    return res


def main():
    out = _protocol_channel()

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    if "--check" in sys.argv[1:]:
        send(_check())
        return 0

    threading.Thread(target=_watchdog, args=(os.getppid(),), daemon=True).start()
    global _env
    try:
        import scienceworld
        from scienceworld import ScienceWorldEnv
        _env = ScienceWorldEnv("", envStepLimit=ENV_STEP_LIMIT)
    except Exception as e:  # noqa: BLE001
        send({"op": "hello", "ok": False, "fatal": True,
              "error": f"{type(e).__name__}: {e}"})
        _cleanup()
        return 2
    send({"op": "hello", "ok": True, "pid": os.getpid(), "protocol": PROTOCOL,
          "version": getattr(scienceworld, "__version__", "unknown")})

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            send({"ok": False, "error": f"bad request: {e}"})
            continue
        if req.get("op") == "exit":
            break
        try:
            resp = _handle(_env, req, out)
            resp["ok"] = True
        except Exception as e:  # noqa: BLE001
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        resp["id"] = req.get("id")
        send(resp)
    _cleanup()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        _cleanup()
        code = 130
    sys.stdout.flush()
    os._exit(code)
