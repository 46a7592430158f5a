"""tests/engines.rs: mpo-run's TRL exports through `datasets` and TRL's own
chat-template step (trl.data_utils.apply_chat_template); prints the
rendered texts as JSON for the Rust side to compare with its own.

usage: trl_dataset_check.py MODEL_DIR EXPORT_DIR
"""

import json
import sys

from datasets import load_dataset
from transformers import AutoTokenizer
from trl.data_utils import apply_chat_template, is_conversational

model, d = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(model)
sft = load_dataset("json", data_files=f"{d}/trl_seed_sft.jsonl", split="train")
dpo = load_dataset("json", data_files=f"{d}/trl_dpo.jsonl", split="train")
assert is_conversational(sft[0]), "the SFT export is conversational"
assert is_conversational(dpo[0]), "the DPO export is conversational"
s = apply_chat_template({"messages": sft[0]["messages"]}, tok)
p = apply_chat_template({k: dpo[0][k] for k in ("prompt", "chosen", "rejected")}, tok)
print(json.dumps({
    "sft_text": s["text"],
    "dpo_prompt": p["prompt"],
    "dpo_chosen": p["chosen"],
    "sft_columns": sorted(sft.column_names),
}))
