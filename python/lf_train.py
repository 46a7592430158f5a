"""mpo-run's driver for LLaMA-Factory (src/train/external/llamafactory.rs
writes it, with `engine_common.py`, next to the job it runs). One process
per rank, launched by torchrun or accelerate:

    python -m torch.distributed.run --nproc_per_node N lf_train.py train.yaml

`train.yaml` is an ordinary LLaMA-Factory config (`llamafactory-cli train
train.yaml` runs the same training, without mpo-run's progress reports);
the dataset and its `dataset_info.json` entry are next to it. The driver
resumes from the newest checkpoint in `output_dir` and reports each
optimizer step's metrics to mpo-run.
"""

import os
import sys

from engine_common import report_callback, say, start_watchdog

start_watchdog()

import yaml  # noqa: E402
from llamafactory.train.tuner import run_exp  # noqa: E402
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402


def main():
    args = yaml.safe_load(open(sys.argv[1]))
    out = args["output_dir"]
    last = get_last_checkpoint(out) if os.path.isdir(out) else None
    if last:
        args["resume_from_checkpoint"] = last
        say("resume", checkpoint=os.path.basename(last))
    run_exp(args=args, callbacks=[report_callback()])
    say("done")


if __name__ == "__main__":
    main()
