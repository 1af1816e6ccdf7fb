"""The language-model training loop (R5.1 pre-training; the trainer side of R2.4).

One optimizer step at iteration ``it`` (0-based):

1. ``lr = lr_at(it)`` — linear warmup then cosine decay (:mod:`dodai.train.schedule`);
2. for each of ``gradient_accumulation_steps`` micro-batches: draw a random-window batch with the
   batch generator, ``loss = model(x, y)[1] / accum``, ``loss.backward()`` (under bf16 autocast when
   asked; under DDP gradients are all-reduced on the last micro-batch only);
3. a non-finite loss stops the run (``DodaiError`` naming the step; the last good checkpoint is kept
   because nothing is written after the bad step);
4. clip the global gradient norm to ``grad_clip`` (Pascanu et al. 2013); AdamW step (Loshchilov &
   Hutter 2019) with decoupled weight decay on matrices only.

Every ``eval_interval`` steps (and at the end): the mean loss over ``eval_iters`` batches of train
and val (drawn from a generator re-seeded at every evaluation, so every evaluation sees the same
batches and evaluation never moves the training data position), perplexity ``exp(val_loss)``,
bits per byte ``val_loss / ln 2 / (bytes per token)``; one JSON line appended to ``metrics.jsonl``
(flush + fsync) and a checkpoint (:mod:`dodai.train.checkpoint`).

Resume: weights, optimizer state, step, elapsed time and every RNG state (torch, numpy, python,
batch generator) come back from the checkpoint, so on CPU the resumed losses equal an
uninterrupted run's bit for bit. ``max_minutes`` stops cleanly with a final evaluation and checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dodai.data.batching import get_batch, make_generator
from dodai.errors import DodaiError
from dodai.io import atomic_write_json
from dodai.train import checkpoint as ckpt_io
from dodai.train import distributed as dist_mod
from dodai.train.schedule import lr_at

EVAL_SEED_OFFSET = 1_000_003  # evaluation batches come from their own stream, never the training one


@dataclass
class TrainConfig:
    # --- data ---
    batch_size: int = 12  # sequences per micro-batch, global across all processes (nanoGPT's CPU recipe)
    block_size: int = 64  # tokens per sequence (context length)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    # --- optimization (AdamW + warmup/cosine; nanoGPT's defaults for its shakespeare_char config) ---
    max_iters: int = 2000  # optimizer steps in total
    learning_rate: float = 1e-3  # peak learning rate after warmup
    min_lr: float = 1e-4  # floor of the cosine decay (≈ learning_rate / 10)
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int = 2000  # step at which the cosine reaches min_lr (≈ max_iters)
    decay_lr: bool = True  # False: constant learning_rate
    weight_decay: float = 0.1  # AdamW decoupled weight decay (2-D weights only)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # clip the global gradient norm; 0 disables
    fused_adamw: bool = True  # torch's fused AdamW kernel when the device supports it (same maths, faster)
    # --- evaluation, logging, checkpoints ---
    eval_interval: int = 250  # evaluate (and checkpoint) every this many steps
    eval_iters: int = 20  # batches per split per evaluation
    log_interval: int = 1  # progress-bar refresh every this many steps
    checkpoint: bool = True  # write ckpt/ at every evaluation
    # --- runtime ---
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    max_minutes: float | None = None  # wall-clock budget; stops cleanly with a final eval + checkpoint
    quiet: bool = False  # no progress bar

    def validate(self) -> None:
        for name in ("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise DodaiError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_iters < 0:
            raise DodaiError(f"max-iters must be >= 0, got {self.max_iters}")
        if not self.learning_rate > 0:
            raise DodaiError(f"learning-rate must be > 0, got {self.learning_rate}")
        if self.dtype not in ("float32", "bfloat16"):
            raise DodaiError(f"dtype must be float32 or bfloat16, got {self.dtype}")


def default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D+ tensors (matmul weights, embeddings), not biases and norm gains (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if hasattr(model, "optimizer_param_groups"):
        groups = model.optimizer_param_groups(cfg.weight_decay)
    else:
        groups = default_param_groups(model, cfg.weight_decay)
    kw = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    if cfg.fused_adamw:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass  # fused kernel unavailable for this device/dtype: the plain loop computes the same update
    return torch.optim.AdamW(groups, **kw)


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_losses(rows: list[dict], path: Path, title: str = "loss") -> Path | None:
    if not rows:
        return None
    from dodai.io import atomic_write_bytes
    from dodai.viz import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_loss"] for r in rows], "o-", label="train")
    ax.plot(steps, [r["val_loss"] for r in rows], "s-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


@torch.no_grad()
def evaluate(model, data: torch.Tensor, cfg: TrainConfig, info, autocast) -> float:
    """Mean loss over ``eval_iters`` global batches (each rank its slice, then averaged)."""
    g = make_generator(cfg.seed + EVAL_SEED_OFFSET)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=cfg.device)
    for _ in range(cfg.eval_iters):
        x, y = get_batch(data, cfg.block_size, cfg.batch_size, g, info.rank, info.world_size, cfg.device)
        with autocast:
            _, loss = model(x, y)
        total += loss.double()
    model.train(was_training)
    mean = total / cfg.eval_iters
    return float(dist_mod.all_reduce_mean(mean, info).item())


def train(
    model: torch.nn.Module,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    cfg: TrainConfig,
    out_dir: str | Path,
    tokenizer=None,
    bytes_per_token: float | None = None,
    resume: bool = False,
    info: dist_mod.DistInfo | None = None,
) -> dict:
    """Train ``model`` (``model(x, y) -> (logits, loss)``) and write the run folder; returns the final metrics.

    ``bytes_per_token`` = UTF-8 bytes / tokens of the val text, for bits per byte. ``info``: the
    distributed environment (default: from torchrun's env vars, else a single process); the
    process group must already be initialised (see :func:`dodai.train.distributed.init`).
    """
    cfg.validate()
    info = info or dist_mod.from_env()
    out = Path(out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train_ids), ("val", val_ids)):
        if ids.numel() < cfg.block_size + 1:
            raise DodaiError(f"{name} split has {ids.numel()} tokens, fewer than block size + 1 = {cfg.block_size + 1}")
    if cfg.batch_size % info.world_size:
        raise DodaiError(f"batch size {cfg.batch_size} is not divisible by {info.world_size} processes")

    torch.manual_seed(cfg.seed)
    model.to(cfg.device)
    raw = model
    optimizer = make_optimizer(raw, cfg)
    batch_gen = make_generator(cfg.seed)
    step, best_val, prior_elapsed = 0, float("inf"), 0.0
    metrics_path = out / "metrics.jsonl"

    if resume:
        state = ckpt_io.load_checkpoint(out, raw, optimizer)
        step = int(state["step"])
        best_val = float(state.get("best_val_loss", float("inf")))
        prior_elapsed = float(state.get("elapsed_s", 0.0))
        batch_gen.set_state(state["batch_generator"])
        ckpt_io.set_rng_state(state["rng"])
        if info.is_main:  # rows logged after the checkpoint (the run died in between) are dropped
            rows = [r for r in read_metrics(out) if r["step"] <= step]
            tmp = metrics_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, metrics_path)
    elif info.is_main and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log
    if info.is_main:
        atomic_write_json(out / "train_config.json", asdict(cfg) | {"world_size": info.world_size})

    ddp_model = dist_mod.wrap(raw, info, cfg.device)
    dev_type = torch.device(cfg.device).type
    autocast = (
        torch.autocast(device_type=dev_type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16" else nullcontext()
    )
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    bar = None
    if info.is_main and not cfg.quiet:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_iters, initial=step, unit="step", dynamic_ncols=True, desc="train")

    t0 = time.time()
    tok_t0, tok_step0 = t0, step
    last = {}
    last_loss = float("nan")
    step_times: list[float] = []  # seconds per optimizer step since the last evaluation (no eval/ckpt time)
    train_time = 0.0  # cumulative seconds spent in optimizer steps in this process
    resumed_at = step if resume else None

    def elapsed() -> float:
        return prior_elapsed + (time.time() - t0)

    def do_eval(at: int) -> dict:
        nonlocal best_val
        tr = evaluate(raw, train_ids, cfg, info, autocast)
        va = evaluate(raw, val_ids, cfg, info, autocast)
        best_val = min(best_val, va)
        now = time.time()
        row = {
            "step": at,
            "elapsed_s": round(elapsed(), 3),
            "train_loss": tr,
            "val_loss": va,
            "val_ppl": math.exp(va) if va < 700 else float("inf"),
            "lr": lr_at(max(at - 1, 0), cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters,
                        cfg.decay_lr),
            "tokens": at * tokens_per_step,
            "tokens_per_s": round((at - tok_step0) * tokens_per_step / max(now - tok_t0, 1e-9), 1),
        }
        if step_times:
            row["ms_per_iter"] = round(1000 * sorted(step_times)[len(step_times) // 2], 3)  # median
            row["train_time_s"] = round(train_time, 3)
            step_times.clear()
        if bytes_per_token:
            row["val_bpb"] = va / math.log(2) / bytes_per_token
        if info.is_main:
            _append_jsonl(metrics_path, row)
            if cfg.checkpoint:
                state = {
                    "step": at,
                    "best_val_loss": best_val,
                    "elapsed_s": elapsed(),
                    "optimizer": optimizer.state_dict(),
                    "batch_generator": batch_gen.get_state(),
                    "rng": ckpt_io.rng_state(),
                    "train_config": json.dumps(asdict(cfg)),
                }
                ckpt_io.save_checkpoint(out, raw, state, tokenizer)
            if bar is not None:
                bar.write(f"step {at}: train {tr:.4f}, val {va:.4f}" + (f", {row['val_bpb']:.3f} bpb" if
                                                                           bytes_per_token else ""))
        return row

    ddp_model.train()
    try:
        while True:
            over_time = cfg.max_minutes is not None and elapsed() > cfg.max_minutes * 60
            over_time = dist_mod.any_flag(over_time, info, cfg.device) if cfg.max_minutes is not None else False
            finished = step >= cfg.max_iters or over_time
            if (step % cfg.eval_interval == 0 or finished) and step != resumed_at:
                last = do_eval(step)
            if finished:
                break
            ts = time.perf_counter()
            lr = lr_at(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters, cfg.decay_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.gradient_accumulation_steps):
                x, y = get_batch(train_ids, cfg.block_size, cfg.batch_size, batch_gen, info.rank,
                                 info.world_size, cfg.device)
                sync = micro == cfg.gradient_accumulation_steps - 1
                ctx = ddp_model.no_sync() if (info.enabled and not sync) else nullcontext()
                with ctx:
                    with autocast:
                        _, loss = ddp_model(x, y)
                    (loss / cfg.gradient_accumulation_steps).backward()
                loss_sum += loss.item()
            last_loss = loss_sum / cfg.gradient_accumulation_steps
            bad = not math.isfinite(last_loss)
            if dist_mod.any_flag(bad, info, cfg.device) if info.enabled else bad:
                good = ckpt_io.find_checkpoint(out)
                raise DodaiError(
                    f"loss became {last_loss} at step {step}; stopped"
                    + (f"; the last good checkpoint (step {_ckpt_step(good)}) is kept in {good}" if good else "")
                )
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - ts
            step_times.append(dt)
            train_time += dt
            if bar is not None:
                bar.update(1)
                if step % cfg.log_interval == 0:
                    el = time.time() - tok_t0
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}",
                                    tok_s=f"{(step - tok_step0) * tokens_per_step / max(el, 1e-9):.0f}")
    finally:
        if bar is not None:
            bar.close()

    if info.is_main:
        ckpt_io.save_model_folder(raw, out)
        if tokenizer is not None:
            ckpt_io.save_tokenizer(tokenizer, out / "tokenizer.json")
        plot_losses(read_metrics(out), out / "loss.png")
    if not last and info.is_main:  # resumed a run that had already finished
        rows = read_metrics(out)
        last = rows[-1] if rows else {}
    result = dict(last)
    result.update({"best_val_loss": best_val, "steps": step, "total_s": round(elapsed(), 3),
                   "last_train_batch_loss": last_loss, "stopped_by_time": step < cfg.max_iters})
    return result


def _ckpt_step(d: Path) -> int | str:
    try:
        return json.loads((d / ckpt_io.MARKER).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return "?"
