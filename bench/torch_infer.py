#!/usr/bin/env python3
"""The PyTorch/transformers side of benches/vs_torch.rs: loads a Hugging Face
model dir once, then answers one JSON job per stdin line with one JSON line:

    {"kind": "prefill", "batch": B, "len": L, "reps": R}             -> tokens/s of a forward pass
    {"kind": "decode", "batch": B, "len": L, "steps": S, "reps": R}  -> tokens/s of S cached steps after an L-token prefill

(each measured R times over, the times summed).

Token ids follow the Rust side's formula, so both sides see the same ids; the
reply carries the greedy next token of every row (last prefill position) for
the equality check. float32, SDPA attention, `torch.set_num_threads(THREADS)`.
"""
import json
import os
import sys
import time

import warnings

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging

warnings.filterwarnings("ignore")
logging.set_verbosity_error()

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="sdpa").eval()
vocab = model.config.vocab_size


def ids(batch, length):
    return torch.tensor([[((i * 7 + b * 13) + 3) % vocab for i in range(length)] for b in range(batch)])


print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    x = ids(job["batch"], job["len"])
    reps = job.get("reps", 1)
    with torch.inference_mode():
        prefill = decode = 0.0
        for _ in range(reps):
            t = time.perf_counter()
            out = model(input_ids=x, use_cache=True)
            prefill += time.perf_counter() - t
            if job["kind"] == "decode":
                past = out.past_key_values
                t = time.perf_counter()
                for s in range(job["steps"]):
                    step = torch.tensor([[(s + b + 5) % vocab] for b in range(job["batch"])])
                    past = model(input_ids=step, past_key_values=past, use_cache=True).past_key_values
                decode += time.perf_counter() - t
        reply = {"greedy": out.logits[:, -1].argmax(-1).tolist(), "prefill_tokens_per_s": reps * x.numel() / prefill}
        if job["kind"] == "decode":
            reply["decode_tokens_per_s"] = reps * job["batch"] * job["steps"] / decode
    print(json.dumps(reply), flush=True)
