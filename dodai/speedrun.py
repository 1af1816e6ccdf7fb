"""`dodai speedrun`, the main job: built-in corpus → BPE → GPT pre-training in a time budget → report.

Stages (each timed, all in one run folder):

1. **corpus**: ``python-docs`` (the English prose every Python ships; :mod:`dodai.data.corpora`),
   split by document (hash rule of :mod:`dodai.data.prepare`, 10 % val);
2. **tokenizer**: byte-level BPE (:class:`dodai.tokenizers.bpe.ByteLevelBPE`) trained on the train
   split; stats: vocabulary, UTF-8 bytes per token on val, training and encoding time;
3. **model**: a GPT sized for two CPU cores and the budget (:func:`size_for_budget`);
4. **timing probe**: a few optimizer steps on a throw-away copy measure seconds per step, so the
   cosine schedule can be fitted to the budget: ``max_iters ≈ 0.85 × budget / step time``
   (the rest is evaluation and checkpoints); ``--max-minutes`` still stops training at the budget;
5. **train** with :func:`dodai.train.trainer.train` (AdamW, warmup + cosine, checkpoints, metrics);
6. **evaluate** (val loss, perplexity, bits per byte) and **sample** from a few prompts;
7. **report.md** (+ results.json) with the metrics table, loss curve, samples and tokenizer stats.

The budget (``minutes``) covers stage 5 (training with its evaluations); the probe, the corpus
(cached after its first build), the tokenizer and the report add to the wall time and are reported
separately.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

PROMPTS = ["Return the ", "This module provides ", "If the argument is ", "The default value "]


def size_for_budget(minutes: float) -> dict:
    """Model and batch shape for the budget on ~2 CPU cores (bigger budgets afford a wider model)."""
    if minutes < 1.0:  # smoke-test scale: learns something in seconds
        return dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, learning_rate=3e-3)
    if minutes < 10.0:
        return dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=16, learning_rate=2e-3)
    return dict(n_layer=6, n_head=6, n_embd=192, block_size=128, batch_size=24, learning_rate=1.5e-3)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _probe_step_seconds(model, train_ids, cfg, steps: int = 3) -> float:
    """Median seconds per optimizer step of a deep copy of ``model`` (the real model stays untouched),
    trained for ``steps + 1`` steps by :func:`dodai.train.fit.fit` with the run's settings."""
    from dataclasses import replace

    from dodai.train.fit import fit
    from dodai.train.trainer import RandomWindows, lm_loss

    m = copy.deepcopy(model)
    fcfg = replace(cfg.fit_config(), steps=steps + 1, time_budget_s=None, max_seconds=None, checkpoint=False,
                   save_model=False, seed=None, quiet=True)
    res = fit(m, RandomWindows(train_ids, cfg.block_size, cfg.batch_size, cfg.seed + 99), lm_loss, fcfg)
    ends = [r["seconds"] for r in res.history]
    times = [b - a for a, b in zip(ends, ends[1:])]  # the first step pays one-time costs: not counted
    return sorted(times)[len(times) // 2]


def speedrun(out_dir: str | Path = "runs/speedrun", minutes: float = 5.0, seed: int = 1337, quiet: bool = False,
             vocab_size: int = 4096, corpus: str = "python-docs", threads: int | None = None) -> dict:
    """Run every stage (module docstring) into ``out_dir``; returns the results dict (also results.json)."""
    import torch

    from dodai.data.batching import to_tensor
    from dodai.data.prepare import load_split
    from dodai.errors import DodaiError
    from dodai.generate.sampling import generate
    from dodai.models.gpt import GPT, GPTConfig
    from dodai.report import Report
    from dodai.tokenizers.bpe import ByteLevelBPE
    from dodai.train.trainer import TrainConfig, train

    if not minutes > 0:
        raise DodaiError(f"--minutes must be > 0, got {minutes}")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.time()

    t = time.time()
    _log(f"[1/6] corpus {corpus} ...", quiet)
    split = load_split(corpus, 0.1, seed=0)
    timings["corpus_s"] = time.time() - t

    t = time.time()
    _log(f"[2/6] BPE tokenizer, vocab {vocab_size}, on {split.meta['train_bytes'] / 1e6:.2f} MB ...", quiet)
    tok = ByteLevelBPE.train(split.train, vocab_size, special_tokens=["<|endoftext|>"])
    timings["tokenizer_train_s"] = time.time() - t
    t = time.time()
    train_ids = to_tensor(tok.encode(split.train), tok.vocab_size)
    val_ids = to_tensor(tok.encode(split.val), tok.vocab_size)
    timings["encode_s"] = time.time() - t
    bytes_per_token = split.meta["val_bytes"] / val_ids.numel()
    tok_stats = {
        "vocab_size": tok.vocab_size,
        "train_tokens": train_ids.numel(),
        "val_tokens": val_ids.numel(),
        "val_bytes_per_token": round(bytes_per_token, 4),
        "train_bytes_per_token": round(split.meta["train_bytes"] / train_ids.numel(), 4),
        "tokenizer_train_s": round(timings["tokenizer_train_s"], 2),
        "encode_MB_per_s": round((split.meta["train_bytes"] + split.meta["val_bytes"]) / 1e6
                                 / max(timings["encode_s"], 1e-9), 3),
    }

    _log("[3/6] model ...", quiet)
    shape = size_for_budget(minutes)
    mcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=shape["block_size"], n_layer=shape["n_layer"],
                     n_head=shape["n_head"], n_embd=shape["n_embd"], dropout=0.0, bias=False)
    torch.manual_seed(seed)
    model = GPT(mcfg)
    cfg = TrainConfig(batch_size=shape["batch_size"], block_size=shape["block_size"],
                      learning_rate=shape["learning_rate"], min_lr=shape["learning_rate"] / 10, beta2=0.99,
                      seed=seed, quiet=quiet, eval_iters=10 if minutes >= 1 else 4)

    t = time.time()
    step_s = _probe_step_seconds(model, train_ids, cfg)
    timings["probe_s"] = time.time() - t
    budget_s = minutes * 60
    iters = max(10, int(0.85 * budget_s / step_s))
    cfg.max_iters = cfg.lr_decay_iters = iters
    cfg.warmup_iters = max(1, min(100, iters // 20))
    cfg.eval_interval = max(1, iters // 10)
    cfg.max_minutes = (budget_s + 1.0) / 60  # hard stop if the probe was optimistic (machine got busier)
    _log(f"[4/6] training {model.num_params() / 1e6:.2f} M params for ~{iters} steps "
         f"({step_s * 1000:.0f} ms/step probed, budget {budget_s:.0f} s) ...", quiet)

    t = time.time()
    res = train(model, train_ids, val_ids, cfg, out, tokenizer=tok, bytes_per_token=bytes_per_token)
    timings["train_s"] = time.time() - t

    _log("[5/6] samples ...", quiet)
    t = time.time()
    model.eval()
    samples = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt)
        n_new = max(1, min(60, mcfg.block_size - len(ids)))
        new = list(generate(model, ids, n_new, temperature=0.8, top_k=40, seed=seed + i))
        samples.append({"prompt": prompt, "text": tok.decode(ids + new)})
    timings["sample_s"] = time.time() - t

    _log("[6/6] report ...", quiet)
    from dodai.train.trainer import read_metrics

    rows = read_metrics(out)
    results = {
        "val_loss": res["val_loss"],
        "val_ppl": res["val_ppl"],
        "val_bpb": res.get("val_bpb"),
        "train_loss": res["train_loss"],
        "initial_val_loss": rows[0]["val_loss"] if rows else None,
        "uniform_loss": math.log(tok.vocab_size),
        "steps": res["steps"],
        "planned_steps": iters,
        "stopped_by_time": res["stopped_by_time"],
        "tokens_seen": res["steps"] * cfg.batch_size * cfg.block_size,
        "params": model.num_params(),
        "probe_ms_per_step": round(step_s * 1000, 2),
        "minutes_budget": minutes,
        "tokenizer": tok_stats,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "samples": samples,
        "model_config": mcfg.to_dict(),
        "torch_threads": torch.get_num_threads(),
    }
    rep = Report(out, "dodai speedrun")
    rep.text(f"Built-in corpus `{corpus}` ({split.meta['documents']} documents, "
             f"{split.meta['train_bytes'] / 1e6:.2f} MB train / {split.meta['val_bytes'] / 1e6:.2f} MB val, "
             f"split: {split.meta['split_rule']}) → byte-level BPE → GPT "
             f"({model.num_params() / 1e6:.2f} M parameters, {mcfg.n_layer} layers × {mcfg.n_embd} wide, "
             f"context {mcfg.block_size}) trained for {res['steps']} steps in a {minutes:g}-minute budget "
             f"on {torch.get_num_threads()} CPU thread(s).")
    rep.heading("Final evaluation")
    rep.table([{"metric": "val loss (nats/token)", "value": res["val_loss"]},
               {"metric": "val perplexity", "value": res["val_ppl"]},
               {"metric": "val bits per byte", "value": res.get("val_bpb")},
               {"metric": "train loss", "value": res["train_loss"]},
               {"metric": "initial val loss (step 0)", "value": results["initial_val_loss"]},
               {"metric": "uniform baseline ln(V)", "value": results["uniform_loss"]},
               {"metric": "steps (planned)", "value": f"{res['steps']} ({iters})"},
               {"metric": "tokens seen", "value": results["tokens_seen"]}])
    rep.heading("Loss curve")
    if (out / "loss.png").is_file():
        rep.image(out / "loss.png", "train and val loss per evaluation")
    rep.table([{k: r.get(k) for k in ("step", "elapsed_s", "train_loss", "val_loss", "val_bpb", "lr")}
               for r in rows])
    rep.heading("Samples (temperature 0.8, top-k 40)")
    for s in samples:
        rep.code(s["text"])
    rep.heading("Tokenizer")
    rep.table([{"stat": k, "value": v} for k, v in tok_stats.items()])
    rep.heading("Time")
    timings["total_s"] = time.time() - t_all
    results["timings_s"]["total_s"] = round(timings["total_s"], 2)
    rep.table([{"stage": k, "seconds": round(v, 2)} for k, v in timings.items()])
    rep.results.update(results)
    rep.write()
    _log(f"val loss {res['val_loss']:.4f}, {res.get('val_bpb', float('nan')):.3f} bits/byte; report: "
         f"{out / 'report.md'}", quiet)
    return results
