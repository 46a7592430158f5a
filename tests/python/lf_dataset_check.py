"""tests/engines.rs: LLaMA-Factory's own argument parser and data loader on
the job files mpo-run writes (train.yaml, the ShareGPT dataset and its
dataset_info.json entry); prints, as JSON on the last line, how many rows
loaded and how many of their tokens are trained and masked.

usage: lf_dataset_check.py TRAIN_YAML
"""

import json
import sys

import yaml
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

args = yaml.safe_load(open(sys.argv[1]))
model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
tok_mod = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tok_mod["tokenizer"], data_args)
stage = "rm" if args["stage"] == "dpo" else "sft"
data = get_dataset(template, model_args, data_args, training_args, stage, **tok_mod)["train_dataset"]
labels = [data[i]["chosen_labels" if stage == "rm" else "labels"] for i in range(len(data))]
print(json.dumps({
    "rows": len(data),
    "columns": sorted(data.column_names),
    "trained_tokens": sum(sum(1 for t in l if t != -100) for l in labels),
    "masked_prompt_tokens": sum(sum(1 for t in l if t == -100) for l in labels),
}))
