"""What mpo-run's engine drivers share (`trl_train.py`, `lf_train.py`;
mpo-run writes this file next to them).

- A watchdog: a thread polls mpo-run's pid (`MPO_RUN_PID`) and kills the
  whole process group (the launcher and every rank) once mpo-run is gone,
  even after a SIGKILL that gave mpo-run no chance to clean up.
- `Report`, a TrainerCallback that talks to mpo-run on stdout, rank 0
  only, one JSON object per line after the `@@mpo-run ` prefix: `begin`
  (steps), `log` (one per optimizer step: the Trainer's logged metrics,
  unrounded), `save` (a checkpoint was written), and the drivers' own
  `resume` and `done`. Anything else printed is the engines' own log.
- `finish()`: the ranks' orderly goodbye. A rank that leaves while the
  others still use the (gloo) process group aborts in C++ ("terminate
  called without an active exception"), which fails the whole launch
  after the model was saved; so every rank waits for the others, then
  tears the group down before the interpreter exits.
"""

import json
import os
import signal
import threading
import time


def _watch(pid):
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(137)
        except PermissionError:
            pass


def start_watchdog():
    if os.environ.get("MPO_RUN_PID"):
        threading.Thread(target=_watch, args=(int(os.environ["MPO_RUN_PID"]),), daemon=True).start()


RANK = int(os.environ.get("RANK", "0"))

# For tests: seconds to wait after each optimizer step, so that a kill lands
# mid-training however fast a tiny model trains (tests/engines.rs).
STEP_DELAY = float(os.environ.get("MPO_RUN_TEST_STEP_DELAY", "0"))


def say(event, **fields):
    if RANK == 0:
        print("@@mpo-run " + json.dumps({"event": event, **fields}), flush=True)


def report_callback():
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        """One `log` line per optimizer step (logging_steps = 1)."""

        def __init__(self):
            self.t = time.time()
            self.tokens = None

        def on_train_begin(self, args, state, control, **kw):
            say("begin", max_steps=state.max_steps, step=state.global_step)
            self.t = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "loss" not in logs:
                return
            now = time.time()
            tokens = logs.get("num_tokens")
            rate = None
            if tokens is not None and self.tokens is not None and now > self.t:
                rate = (tokens - self.tokens) / (now - self.t)
            self.tokens, self.t = tokens, now
            say("log", step=state.global_step, max_steps=state.max_steps, epoch=state.epoch, tokens_per_s=rate, logs=logs)

        def on_save(self, args, state, control, **kw):
            say("save", step=state.global_step)
            if STEP_DELAY:
                time.sleep(STEP_DELAY)

    return Report()


def finish():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
