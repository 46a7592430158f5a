"""mpo-run's driver for TRL (src/train/external/trl.rs writes it, with
`engine_common.py`, next to the job it runs). One process per rank,
launched by torchrun or accelerate:

    python -m torch.distributed.run --nproc_per_node N trl_train.py job.json

`job.json` (written by mpo-run) holds the method (SFT or DPO), the base
model directory, the dataset file (TRL's conversational format), every
hyper-parameter, and where to put checkpoints and the trained model. The
driver adds no hyper-parameter of its own: what it does not get from the
job is TRL's and transformers' default.
"""

import json
import os
import sys

from engine_common import finish, report_callback, say, start_watchdog

start_watchdog()

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402


def main():
    job = json.load(open(sys.argv[1]))
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.manual_seed(job["seed"])
    tok = AutoTokenizer.from_pretrained(job["base_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # float32 weights; `bf16` is mixed precision (autocast), as in mpo-run.
    model = AutoModelForCausalLM.from_pretrained(job["base_dir"], dtype=torch.float32)

    data = load_dataset("json", data_files=job["data"], split="train")
    keep = {"sft_chat": ["messages"], "sft": ["prompt", "completion"], "dpo": ["prompt", "chosen", "rejected"]}[job["format"]]
    data = data.remove_columns([c for c in data.column_names if c not in keep])

    common = dict(
        output_dir=job["checkpoint_dir"],
        per_device_train_batch_size=job["per_device_batch"],
        gradient_accumulation_steps=job["grad_accum"],
        learning_rate=job["lr"],
        num_train_epochs=job["epochs"],
        lr_scheduler_type=job["scheduler"],
        warmup_steps=job["warmup_steps"] if job["warmup_steps"] else job["warmup_ratio"],
        weight_decay=job["weight_decay"],
        adam_beta1=job["betas"][0],
        adam_beta2=job["betas"][1],
        adam_epsilon=job["eps"],
        max_grad_norm=job["max_grad_norm"],
        max_length=job["max_len"],
        seed=job["seed"],
        data_seed=job["seed"],
        logging_steps=1,
        save_strategy="steps" if job["save_every"] else "no",
        save_steps=job["save_every"] or 500,
        save_total_limit=2,
        report_to=[],
        bf16=job["precision"] == "bf16",
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() else "gloo",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        activation_checkpointing=job["gradient_checkpointing"],
        optim="adamw_torch",
        deepspeed=job.get("deepspeed"),
        fsdp=job.get("fsdp") or "",
    )
    if job["method"] == "dpo":
        args = DPOConfig(
            beta=job["beta"],
            loss_type=[job["loss_type"]],
            label_smoothing=job["label_smoothing"],
            precompute_ref_log_probs=True,
            **common,
        )
        trainer_class = DPOTrainer
    else:
        args = SFTConfig(assistant_only_loss=job["format"] == "sft_chat", **common)
        trainer_class = SFTTrainer

    if not job["shuffle"]:
        base = trainer_class

        class InOrder(base):
            def _get_train_sampler(self, *a, **kw):
                return torch.utils.data.SequentialSampler(self.train_dataset)

        trainer_class = InOrder

    trainer = trainer_class(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[report_callback()])
    last = get_last_checkpoint(job["checkpoint_dir"]) if os.path.isdir(job["checkpoint_dir"]) else None
    if last:
        say("resume", checkpoint=os.path.basename(last))
    trainer.train(resume_from_checkpoint=last)

    if job["method"] == "dpo" and trainer.is_world_process_zero():
        ds = trainer.train_dataset
        with open(job["reference_out"], "w") as f:
            for c, r in zip(ds["ref_chosen_logps"], ds["ref_rejected_logps"]):
                f.write(json.dumps([float(c), float(r)]) + "\n")
    trainer.save_model(job["out_dir"])
    if trainer.is_world_process_zero():
        tok.save_pretrained(job["out_dir"])
    step = trainer.state.global_step
    finish()
    say("done", step=step)


if __name__ == "__main__":
    main()
