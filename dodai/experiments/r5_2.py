"""R5.2 supervised fine-tuning: full fine-tuning vs LoRA on a rule-generated task, before and after.

The task (:mod:`dodai.finetune.tasks`): a date in free-form English ("the 5th day of March in 2021")
must be answered with exactly ``{"date": "2021-03-05"}``; the exact checker scores greedy replies on a
held-out set whose dates never occur in training. Conversations are rendered with the model's own chat
template and only the assistant tokens (+ the end token) carry loss (:mod:`dodai.finetune.sft`).

Full mode: SmolLM2-135M-Instruct (the real weights), full fine-tuning and LoRA (rank 8 on every
attention and MLP projection) with the same data and number of steps; reported: held-out accuracy
before/after, held-out assistant-token loss, training time and trainable parameters. Quick mode (the
test): a tiny random Llama with a BPE tokenizer trained on the task text.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dodai.finetune import sft, tasks
from dodai.finetune.sft import ChatFormatter, SFTConfig
from dodai.report import Report
from dodai.viz import pyplot

ALL_LINEAR = ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]


def setup(quick: bool):
    """(fresh model factory, sizes, full-FT config, LoRA config)."""
    if quick:
        def fresh():
            return tasks.tiny_model_and_tokenizer(seed=0, n_layer=1, n_embd=32)

        sizes = dict(n_train=160, n_test=24, max_new_tokens=16)
        full = SFTConfig(steps=40, batch_size=16, lr=3e-3, warmup=4)
        lora = SFTConfig(steps=40, batch_size=16, lr=3e-2, warmup=4, lora_rank=8, lora_alpha=16,
                         lora_targets=ALL_LINEAR)
        return fresh, sizes, full, lora

    def fresh():
        from dodai.models import load_model

        return load_model("smollm2-135m-instruct")

    # sized for 2 shared CPU cores: 30 steps of 4 conversations (~45 tokens each) per arm
    sizes = dict(n_train=120, n_test=40, max_new_tokens=18)
    full = SFTConfig(steps=30, batch_size=4, lr=3e-5, warmup=3)
    lora = SFTConfig(steps=30, batch_size=4, lr=2e-3, warmup=3, lora_rank=8, lora_alpha=16, lora_targets=ALL_LINEAR)
    return fresh, sizes, full, lora


def evaluate(model, fmt, test, held, max_new_tokens) -> dict:
    t = time.perf_counter()
    acc, replies = sft.task_accuracy(model, fmt, test, max_new_tokens)
    return {"accuracy": acc, "held_out_loss": sft.eval_loss(model, held), "eval_seconds": time.perf_counter() - t,
            "samples": [{"input": e.text, "reply": r, "correct": tasks.is_correct(r, e)}
                        for e, r in zip(test[:5], replies[:5])]}


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh, sizes, cfg_full, cfg_lora = setup(quick)
    model, tok = fresh()
    fmt = ChatFormatter(tok)
    train, test = tasks.split(sizes["n_train"], sizes["n_test"], seed=0)
    data = [fmt.encode(e.messages()) for e in train]
    held = [fmt.encode(e.messages()) for e in test]
    pad = tok.eos_id or 0
    before = evaluate(model, fmt, test, held, sizes["max_new_tokens"])
    rows, curves, results = [], {}, {"before": before}
    rows.append({"model": "before (no fine-tuning)", "trainable_params": 0, "train_seconds": 0.0,
                 "held_out_accuracy": round(before["accuracy"], 3), "held_out_loss": round(before["held_out_loss"], 4)})
    for i, (name, cfg) in enumerate((("full fine-tuning", cfg_full), ("LoRA r=8", cfg_lora))):
        if i:  # each arm starts from the same pre-trained weights
            model, tok = fresh()
        trainable, total = sft.prepare(model, cfg)
        t0 = time.perf_counter()
        hist = sft.train_sft(model, data, cfg, pad_id=pad)
        secs = time.perf_counter() - t0
        after = evaluate(model, fmt, test, held, sizes["max_new_tokens"])
        curves[name] = [h["loss"] for h in hist]
        results[name] = {**after, "train_seconds": secs, "trainable_params": trainable, "total_params": total,
                         "config": cfg.to_dict()}
        rows.append({"model": name, "trainable_params": trainable, "train_seconds": round(secs, 1),
                     "held_out_accuracy": round(after["accuracy"], 3),
                     "held_out_loss": round(after["held_out_loss"], 4)})
    rep = Report(out_dir, "R5.2 Supervised fine-tuning: full vs LoRA, before/after")
    rep.text(f"Task: free-form English date → `{{\"date\": \"YYYY-MM-DD\"}}`, exact-match checker; "
             f"{len(train)} training and {len(test)} held-out conversations (held-out dates never seen). "
             f"Model: {'tiny random Llama (quick mode)' if quick else 'SmolLM2-135M-Instruct'}; loss only on "
             f"assistant tokens + end token; greedy decoding for accuracy. Same steps and data for both arms.")
    rep.table(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("assistant-token loss (train batch)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "sft_loss.png", dpi=90)
    plt.close(fig)
    rep.image("sft_loss.png", "training loss on assistant tokens")
    rep.heading("Sample replies after LoRA")
    rep.table(results["LoRA r=8"]["samples"])
    rep.results.update(results)
    rep.results["table"] = rows
    rep.results["threads"] = torch.get_num_threads()
    rep.write()
    return rep.results
