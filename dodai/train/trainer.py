"""Pre-training a causal LM on a token stream (R5.1; the trainer side of R2.4), on :func:`dodai.train.fit.fit`.

This module is the language-model *recipe*; the loop itself (accumulation, clipping, bf16 autocast,
DDP/FSDP, checkpoints, bitwise resume, NaN stop, metrics, progress, ``torch.compile``) is
:func:`dodai.train.fit.fit`. What the recipe adds:

- **batches**: random windows of the stream (:class:`RandomWindows`, nanoGPT's sampler) drawn with an
  explicit generator whose state is the data position; under DDP every rank draws the same global
  offsets and keeps its slice (:func:`dodai.data.batching.get_batch`);
- **loss**: ``model(x, y)[1]``, the mean next-token cross-entropy;
- **optimizer and schedule**: AdamW (Loshchilov & Hutter 2019; decoupled weight decay on matrices only,
  or the model's own ``optimizer_param_groups``), linear warmup then cosine decay
  (:func:`dodai.train.schedule.lr_at`), or, with ``budget_minutes``, the same shape over the fraction of a
  wall-clock budget (``warmup_frac``; evaluations at every 1/``evals`` of it; training ends within about a
  step of the budget);
- **evaluation**: the mean loss over ``eval_iters`` batches of train and val (drawn from a generator
  re-seeded at every evaluation, so every evaluation sees the same batches and evaluation never moves the
  training data position), perplexity ``exp(val_loss)``, bits per byte ``val_loss / ln 2 / (bytes per
  token)``; one JSON line per evaluation in ``metrics.jsonl`` and a checkpoint;
- the final model folder (``model.safetensors``, ``config.json``, ``tokenizer.json``) and ``loss.png``.

Resume: weights, optimizer state, step, elapsed time and every RNG state (torch, numpy, python, batch
generator) come back from the checkpoint, so on CPU the resumed losses equal an uninterrupted run's bit
for bit. ``max_minutes`` stops a step-driven run cleanly with a final evaluation and checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dodai.data.batching import get_batch, make_generator
from dodai.errors import DodaiError
from dodai.io import atomic_write_json
from dodai.train import distributed as dist_mod
from dodai.train.fit import FitConfig, default_param_groups, fit, read_metrics  # noqa: F401 (re-exported)

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
    checkpoint: bool = True  # write ckpt/ at every evaluation
    # --- runtime ---
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    max_minutes: float | None = None  # wall-clock limit; stops cleanly with a final eval + checkpoint
    budget_minutes: float | None = None  # time-driven run: schedule and evaluations follow the fraction of this
    #   wall-clock budget (warmup_frac, evals), max_iters becomes an upper bound, training ends with the budget
    warmup_frac: float = 0.05  # with budget_minutes: warmup as a fraction of the budget
    evals: int = 10  # with budget_minutes: evaluations per budget
    compile: bool = False  # torch.compile the model for the training step
    parallel: str = "ddp"  # under torchrun: ddp (replicas) or fsdp (sharded parameters, FSDP2)
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
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise DodaiError(f"budget-minutes must be > 0, got {self.budget_minutes}")
        if not 0 <= self.warmup_frac < 1:
            raise DodaiError(f"warmup fraction must be in [0, 1), got {self.warmup_frac}")

    def fit_config(self) -> FitConfig:
        """The loop's settings for this recipe."""
        by_time = self.budget_minutes is not None
        return FitConfig(
            steps=None if by_time and self.max_iters == 0 else self.max_iters,
            time_budget_s=self.budget_minutes * 60 if by_time else None,
            max_seconds=self.max_minutes * 60 if self.max_minutes is not None and not by_time else None,
            optimizer="adamw", lr=self.learning_rate, betas=(self.beta1, self.beta2),
            weight_decay=self.weight_decay, decay_matrices_only=True, fused=self.fused_adamw,
            schedule="cosine" if self.decay_lr else "constant", min_lr=self.min_lr,
            warmup=self.warmup_frac if by_time else self.warmup_iters, decay_steps=self.lr_decay_iters,
            grad_accum=self.gradient_accumulation_steps, grad_clip=self.grad_clip, dtype=self.dtype,
            device=self.device, compile=self.compile, parallel=self.parallel, eval_every=self.eval_interval,
            evals=self.evals, eval_at_start=True, checkpoint=self.checkpoint, save_model=True, seed=self.seed,
            quiet=self.quiet, desc="train")


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


class RandomWindows:
    """Micro-batches of random windows of a token stream: ``(x, y)`` (B/W, T) for this rank.

    The generator's state is the data position (``state_dict``); ``sharded``: each rank slices itself."""

    sharded = True

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, seed: int,
                 info: dist_mod.DistInfo | None = None, device: str = "cpu"):
        self.data, self.block_size, self.batch_size, self.device = data, block_size, batch_size, device
        self.info = info or dist_mod.DistInfo()
        self.generator = make_generator(seed)

    def __call__(self, i: int):
        return get_batch(self.data, self.block_size, self.batch_size, self.generator, self.info.rank,
                         self.info.world_size, self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, st: dict) -> None:
        self.generator.set_state(st["generator"])


def lm_loss(model, batch):
    """Mean next-token cross-entropy of a ``model(x, y) -> (logits, loss)`` causal LM."""
    x, y = batch
    return model(x, y)[1]


@torch.no_grad()
def evaluate(model, data: torch.Tensor, cfg: TrainConfig, info) -> float:
    """Mean loss over ``eval_iters`` global batches (each rank its slice, then averaged)."""
    g = make_generator(cfg.seed + EVAL_SEED_OFFSET)
    total = torch.zeros((), dtype=torch.float64, device=cfg.device)
    for _ in range(cfg.eval_iters):
        x, y = get_batch(data, cfg.block_size, cfg.batch_size, g, info.rank, info.world_size, cfg.device)
        _, loss = model(x, y)
        total += loss.double()
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
    if info.is_main:
        atomic_write_json(out / "train_config.json", asdict(cfg) | {"world_size": info.world_size})

    def run_eval(m) -> dict:
        tr = evaluate(m, train_ids, cfg, info)
        va = evaluate(m, val_ids, cfg, info)
        row = {"train_loss": tr, "val_loss": va, "val_ppl": math.exp(va) if va < 700 else float("inf")}
        if bytes_per_token:
            row["val_bpb"] = va / math.log(2) / bytes_per_token
        return row

    source = RandomWindows(train_ids, cfg.block_size, cfg.batch_size, cfg.seed, info, cfg.device)
    res = fit(model, source, lm_loss, cfg.fit_config(), out_dir=out, evaluate=run_eval, resume=resume, info=info,
              tokenizer=tokenizer, tokens_per_step=cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps)
    rows = read_metrics(out) if info.is_main else res.evals
    if info.is_main:
        plot_losses(rows, out / "loss.png")
    last = dict(res.evals[-1]) if res.evals else (dict(rows[-1]) if rows else {})
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    last.update({"best_val_loss": min(vals) if vals else float("inf"), "steps": res.steps,
                 "total_s": round(res.elapsed_s, 3), "last_train_batch_loss": res.last_loss,
                 "stopped_by_time": res.stopped_by == "time", "stopped_by": res.stopped_by})
    return last
