"""Reads the TensorBoard event files mpo-run wrote with TensorBoard's own
EventAccumulator and prints every scalar as JSON:
{run: {tag: [[step, value], ...]}} (tests/report.rs compares them with the
train log)."""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

root = sys.argv[1]
out = {}
for dirpath, _dirs, files in os.walk(root):
    if not any("tfevents" in f for f in files):
        continue
    acc = EventAccumulator(dirpath, size_guidance={"scalars": 0})
    acc.Reload()
    run = os.path.relpath(dirpath, root)
    out[run] = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps(out, sort_keys=True))
