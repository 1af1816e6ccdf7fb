"""The one training loop: :func:`fit` (model, batches, loss function) -> a trained model and its log.

Every trainer of dodai (pre-training, SFT, the reward model, DPO, the PPO / GRPO policy updates, BERT's
MLM and classifier, the VLM, the experiments) is a *loss function* plus a *batch source* handed to this
loop; the loop owns everything else, so that a feature written here (resume, DDP, mixed precision,
``torch.compile``) exists for all of them.

One optimizer step ``it`` (0-based):

1. ``lr = schedule(it)`` (:mod:`dodai.train.schedule`; by step, or by the fraction of a wall-clock budget)
   set on every parameter group (times the group's ``lr_scale`` when it has one);
2. ``grad_accum`` micro-batches: ``batch = next micro-batch`` (sliced for this rank under DDP/FSDP, moved to
   the device), ``loss = loss_fn(model, batch)`` under bf16 autocast when asked, ``(loss / grad_accum)
   .backward()``; gradients are synchronised across processes on the last micro-batch only;
3. a non-finite loss stops the run: ``on_nan="raise"`` raises a one-line :class:`DodaiError` naming the step
   and the last good checkpoint (nothing is written after the bad step, so it stays good); ``"stop"``
   ends the run and reports it (an experiment about divergence wants the fact, not an error);
4. the global gradient norm is clipped to ``grad_clip`` (Pascanu et al. 2013) and the optimizer steps.

**Events** every ``eval_every`` steps (or every 1/``evals`` of a time budget) and at the end: ``evaluate
(model)`` in eval mode under ``no_grad`` returns a dict of metrics; the row (step, elapsed time, lr, tokens/s,
median ms per step, the metrics) is appended to ``metrics.jsonl`` (flush + fsync) and the checkpoint is
written (:mod:`dodai.train.checkpoint`). An evaluation that returns ``{"stop": True}`` ends the run (early
stopping).

**Batches.** ``batches`` is a function of the micro-batch index ``i`` (``batches(i) -> batch``), an iterable,
or an object with ``__call__`` and ``state_dict`` / ``load_state_dict``. Resume restores a source's state when
it has ``load_state_dict``; any other source is *replayed* — the first ``i`` micro-batches are drawn again and
discarded — which is exact for every source whose batches do not depend on the model (random windows,
shuffled epochs, a seeded closure). Sources that do depend on the model (RL rollouts) carry a state.
Under data parallelism every rank draws the same global micro-batch and keeps its contiguous slice
(:func:`shard_batch`: tensors along dim 0, lists by items, tuples and dicts element-wise), unless the
source says ``sharded = True`` and slices by itself; a loss that is a mean over equal slices then gives the
gradient of the single-process loss (up to summation order).

**Resume** is bitwise on CPU: weights, optimizer state, step, elapsed time, the batch source's position and
every RNG state (torch, numpy, python) come back from the checkpoint.

**Parallelism** under ``torchrun`` (:mod:`dodai.train.distributed`): ``parallel="ddp"`` replicates the model
(Li et al. 2020); ``"fsdp"`` shards parameters, gradients and optimizer state across the ranks with FSDP2
(``torch.distributed.fsdp.fully_shard``; Zhao et al. 2023) for models that do not fit one device; each
``nn.ModuleList`` element (a Transformer block) and then the root are sharded. Checkpoints of an FSDP run
hold the gathered full weights, so they load anywhere.

**Compile** (``compile=True``): the model is wrapped in ``torch.compile`` (TorchInductor) for the training
forward and backward; evaluation runs the plain module. On CPU Inductor generates C++ and needs a compiler.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dodai.errors import DodaiError
from dodai.train import checkpoint as ckpt_io
from dodai.train import distributed as dist_mod
from dodai.train.schedule import SHAPES, step_lr, time_lr

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class FitConfig:
    # --- length ---
    steps: int | None = None  # optimizer steps; None: until the time budget runs out
    time_budget_s: float | None = None  # wall-clock budget (training + evaluations + checkpoints); drives the
    #   schedule and the evaluation cadence, and training ends within about one step of it
    max_seconds: float | None = None  # a plain time limit on a step-driven run: stops with a final event
    # --- optimizer (built by fit from the trainable parameters) ---
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    decay_matrices_only: bool = True  # weight decay on tensors with dim >= 2 only (nanoGPT's rule); False: all
    fused: bool = False  # torch's fused Adam(W) kernel when the device supports it (same maths, faster)
    # --- schedule (ignored when fit gets an lr_fn) ---
    schedule: str = "constant"  # cosine | linear | wsd | constant
    warmup: float = 0  # steps; with a time budget a fraction of it in [0, 1)
    min_lr: float | None = None  # floor of the decay (default: lr / 10)
    decay_steps: int | None = None  # step where the decay reaches min_lr (default: steps)
    cooldown: float = 0.2  # wsd: the final fraction spent decaying
    # --- the step ---
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 0.0  # clip the global gradient norm; 0 disables
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    device: str = "cpu"
    compile: bool = False  # torch.compile the model for the training step
    parallel: str = "ddp"  # ddp | fsdp: what a multi-process run (torchrun) does
    find_unused_parameters: bool = False  # DDP: a loss that leaves some trainable parameters without gradient
    on_nan: str = "raise"  # raise | stop
    # --- events: evaluation, metrics, checkpoints ---
    eval_every: int | None = None  # steps between events (default: only at the end)
    evals: int = 10  # with a time budget: events at every 1/evals of it
    eval_at_start: bool = True  # an event before the first step (when there is an evaluate function)
    checkpoint: bool = True  # write ckpt/ at every event (needs an out_dir)
    metrics_file: str = "metrics.jsonl"  # the event rows, in out_dir
    save_model: bool = False  # write the final model folder (model.safetensors, config.json) into out_dir
    # --- runtime ---
    seed: int | None = None  # torch.manual_seed at the start (None: leave the global RNG alone)
    quiet: bool = True  # no progress on stderr
    desc: str = "train"  # progress label

    def validate(self) -> None:
        if self.steps is None and self.time_budget_s is None:
            raise DodaiError("fit needs a number of steps or a time budget")
        if self.steps is not None and self.steps < 0:
            raise DodaiError(f"steps must be >= 0, got {self.steps}")
        for name in ("time_budget_s", "max_seconds"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise DodaiError(f"{name.replace('_', '-')} must be > 0, got {v}")
        if self.grad_accum < 1:
            raise DodaiError(f"grad-accum must be >= 1, got {self.grad_accum}")
        if not self.lr > 0:
            raise DodaiError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise DodaiError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SHAPES:
            raise DodaiError(f"schedule must be one of {SHAPES}, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise DodaiError(f"dtype must be float32 or bfloat16, got {self.dtype}")
        if self.parallel not in ("ddp", "fsdp"):
            raise DodaiError(f"parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.on_nan not in ("raise", "stop"):
            raise DodaiError(f"on_nan must be raise or stop, got {self.on_nan!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise DodaiError(f"eval-interval must be >= 1, got {self.eval_every}")
        if self.evals < 1:
            raise DodaiError(f"evals must be >= 1, got {self.evals}")
        if self.warmup < 0 or (self.time_budget_s is not None and self.warmup >= 1):
            raise DodaiError(f"warmup must be >= 0 (a fraction below 1 with a time budget), got {self.warmup}")
        if self.grad_clip < 0:
            raise DodaiError(f"grad-clip must be >= 0, got {self.grad_clip}")


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per optimizer step of this call
    evals: list[dict] = field(default_factory=list)  # one row per event of this call (what metrics.jsonl got)
    steps: int = 0  # optimizer steps done in total (including those before a resume)
    elapsed_s: float = 0.0  # wall time of the run in total (including before a resume)
    train_time_s: float = 0.0  # seconds spent in optimizer steps in this call
    stopped_by: str = "steps"  # steps | time | nan | evaluate
    last_loss: float = float("nan")  # the last step's loss


# ------------------------------------------------------------------------------------------------ batches
def shard_batch(batch, rank: int, world_size: int):
    """This rank's contiguous slice of a global micro-batch (see the module docstring)."""
    if world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0] if batch.dim() else 0
        if n % world_size:
            raise DodaiError(f"a batch of {n} rows cannot be split evenly across {world_size} processes")
        per = n // world_size
        return batch[rank * per:(rank + 1) * per]
    if isinstance(batch, list):
        if len(batch) % world_size:
            raise DodaiError(f"a batch of {len(batch)} items cannot be split evenly across {world_size} processes")
        per = len(batch) // world_size
        return batch[rank * per:(rank + 1) * per]
    if isinstance(batch, tuple):
        return tuple(shard_batch(b, rank, world_size) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world_size) for k, v in batch.items()}
    if hasattr(batch, "shard"):
        return batch.shard(rank, world_size)
    if batch is None or isinstance(batch, int | float | str | bool):
        return batch
    raise DodaiError(f"cannot split a batch of type {type(batch).__name__} across processes "
                     "(give it a shard(rank, world_size) method)")


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(to_device(b, device) for b in batch)
    if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor):
        return [to_device(b, device) for b in batch]
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class _Source:
    """Micro-batch ``i`` of a function, an iterable or a stateful source; its position for checkpoints."""

    def __init__(self, batches):
        self.obj = batches
        self.i = 0
        self.it = None
        if hasattr(batches, "__next__"):
            self.it = batches
        elif not callable(batches):
            try:
                self.it = iter(batches)
            except TypeError:
                raise DodaiError(f"batches must be a function of the step, an iterable or an iterator, "
                                 f"got {type(batches).__name__}") from None

    def next(self):
        if self.it is not None:
            try:
                b = next(self.it)
            except StopIteration:
                raise DodaiError(f"the batches ran out after {self.i} micro-batches") from None
        else:
            b = self.obj(self.i)
        self.i += 1
        return b

    def state_dict(self) -> dict:
        st = {"i": self.i}
        if hasattr(self.obj, "state_dict"):
            st["source"] = self.obj.state_dict()
        return st

    def load_state_dict(self, st: dict) -> None:
        target = int(st["i"])
        if hasattr(self.obj, "load_state_dict"):
            self.obj.load_state_dict(st["source"])
            self.i = target
            return
        while self.i < target:  # replay: exact for every source that does not depend on the model
            self.next()


# ------------------------------------------------------------------------------------------------ optimizer
def default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D+ tensors (matmul weights, embeddings), not biases and norm gains (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: FitConfig, param_groups=None) -> torch.optim.Optimizer:
    if param_groups is None:
        if not cfg.decay_matrices_only:
            param_groups = [{"params": [p for p in model.parameters() if p.requires_grad],
                             "weight_decay": cfg.weight_decay}]
        elif hasattr(model, "optimizer_param_groups"):
            param_groups = model.optimizer_param_groups(cfg.weight_decay)
        else:
            param_groups = default_param_groups(model, cfg.weight_decay)
    param_groups = [g for g in param_groups if g["params"]]
    if not param_groups:
        raise DodaiError("nothing to train: every parameter is frozen")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.fused:
        try:
            return cls(param_groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass  # fused kernel unavailable for this device/dtype: the plain loop computes the same update
    return cls(param_groups, **kw)


def check_compiler(device: str) -> None:
    """torch.compile on CPU generates C++: a one-line error when no compiler is installed."""
    if torch.device(device).type != "cpu":
        return
    names = [os.environ.get("CXX") or "", "g++", "c++", "clang++"]
    if not any(n and shutil.which(n) for n in names):
        raise DodaiError("--compile on CPU needs a C++ compiler for TorchInductor (g++ or clang++); "
                         "install one or run without --compile")


# ------------------------------------------------------------------------------------------------ metrics
def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | Path, name: str = "metrics.jsonl") -> list[dict]:
    p = Path(run_dir) / name
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _ckpt_step(d: Path) -> int | str:
    try:
        return json.loads((d / ckpt_io.MARKER).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return "?"


# ------------------------------------------------------------------------------------------------ the loop
def fit(model: torch.nn.Module, batches, loss_fn: Callable, cfg: FitConfig, *, out_dir: str | Path | None = None,
        evaluate: Callable[[torch.nn.Module], dict] | None = None, on_step: Callable[[dict], None] | None = None,
        lr_fn: Callable[[int], float] | None = None, param_groups: list[dict] | None = None, resume: bool = False,
        info: dist_mod.DistInfo | None = None, tokenizer=None, extra_state=None,
        tokens_per_step: int | None = None) -> FitResult:
    """Train ``model`` with ``loss_fn(model, batch) -> loss`` or ``(loss, {name: value})`` on ``batches``.

    ``evaluate(model) -> {name: value}`` runs at the events; ``on_step(row)`` after every optimizer step
    (``row``: step, loss, lr, seconds and the loss function's metrics, averaged over micro-batches and ranks);
    ``lr_fn(step) -> lr`` replaces the named schedule (a recipe that fixes its own formula);
    ``param_groups`` replaces the default groups; ``extra_state`` (``state_dict`` / ``load_state_dict``) is
    checkpointed with the run; ``tokenizer`` is saved into checkpoints. ``out_dir`` receives the event rows
    (``cfg.metrics_file``), ``fit_config.json``, ``ckpt/`` and, with ``save_model``, the model folder.
    """
    cfg.validate()
    info = info or dist_mod.from_env()
    if info.enabled:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise DodaiError("a multi-process run needs the process group (dodai.train.distributed.init) first")
    if resume and out_dir is None:
        raise DodaiError("resume needs the run folder (out_dir)")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    fsdp = info.enabled and cfg.parallel == "fsdp"
    device = torch.device(cfg.device)

    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    raw = model
    twin = _meta_twin(raw) if fsdp and info.is_main and out is not None else None  # to save gathered weights
    model.to(device)
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for m in list(raw.modules()):
            if isinstance(m, torch.nn.ModuleList):
                for block in m:
                    fully_shard(block)
        fully_shard(raw)
    optimizer = make_optimizer(raw, cfg, param_groups)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    params = [p for p in raw.parameters() if id(p) in in_opt]  # model order: the clip norm sums in that order
    source = _Source(batches)
    step, prior_elapsed = 0, 0.0
    metrics_path = out / cfg.metrics_file if out is not None else None

    if resume:
        step, prior_elapsed = _load(out, raw, optimizer, source, extra_state, fsdp, cfg)
        if info.is_main and metrics_path is not None:  # rows logged after the checkpoint are dropped
            rows = [r for r in read_metrics(out, cfg.metrics_file) if r["step"] <= step]
            tmp = metrics_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, metrics_path)
    elif info.is_main and metrics_path is not None and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log
    if info.is_main and out is not None:
        from dodai.io import atomic_write_json

        atomic_write_json(out / "fit_config.json", asdict(cfg) | {"world_size": info.world_size})

    wrapped = raw
    if info.enabled and not fsdp:
        wrapped = dist_mod.wrap(raw, info, str(device), find_unused_parameters=cfg.find_unused_parameters)
    step_model = wrapped
    if cfg.compile:
        check_compiler(str(device))
        step_model = torch.compile(wrapped)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                else nullcontext())
    by_time = cfg.time_budget_s is not None
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10
    decay_steps = cfg.decay_steps if cfg.decay_steps is not None else (cfg.steps or 0)

    def lr_for(it: int, frac: float) -> float:
        if lr_fn is not None:
            return lr_fn(it)
        if by_time:
            return time_lr(cfg.schedule, frac, cfg.lr, min_lr, cfg.warmup, cfg.cooldown)
        return step_lr(cfg.schedule, it, cfg.lr, min_lr, int(cfg.warmup), decay_steps, cfg.cooldown)

    from dodai.train.progress import Progress

    total = cfg.time_budget_s if by_time else cfg.steps
    prog = Progress(total, cfg.desc, enabled=info.is_main and not cfg.quiet,
                    initial=prior_elapsed if by_time else step, by_time=by_time)
    res = FitResult()
    t0 = time.time()
    t_perf = time.perf_counter()
    tok_step0 = step
    step_times: list[float] = []  # seconds per step since the last event (evaluation/checkpoint excluded)
    recent: list[float] = []  # the last few step times: the next step's expected duration
    window: list[float] = []  # step losses since the last event
    last_event_s = 0.0  # duration of the last event: reserved at the end of a time budget
    resumed_at = step if resume else None
    every_s = cfg.time_budget_s / cfg.evals if by_time else None
    next_event_s = ((prior_elapsed // every_s) + 1) * every_s if by_time else None
    lr = lr_for(max(step - 1, 0), prior_elapsed / cfg.time_budget_s if by_time else 0.0)
    was_training = raw.training

    def elapsed() -> float:
        return prior_elapsed + (time.time() - t0)

    def event(at: int) -> bool:
        nonlocal last_event_s
        te = time.perf_counter()
        metrics = {}
        if evaluate is not None:
            mode = raw.training
            raw.eval()
            with torch.no_grad(), autocast:
                metrics = dict(evaluate(raw) or {})
            raw.train(mode)
        stop = bool(metrics.pop("stop", False))
        row = {"step": at, "elapsed_s": round(elapsed(), 3)}
        row.update({k: _float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()})
        row["lr"] = lr
        if evaluate is None and window:
            row["loss"] = sum(window) / len(window)
        window.clear()
        if tokens_per_step:
            row["tokens"] = at * tokens_per_step
            row["tokens_per_s"] = round((at - tok_step0) * tokens_per_step / max(time.time() - t0, 1e-9), 1)
        if step_times:
            row["ms_per_iter"] = round(1000 * sorted(step_times)[len(step_times) // 2], 3)  # median
            row["train_time_s"] = round(res.train_time_s, 3)
            step_times.clear()
        if info.is_main and metrics_path is not None:
            append_jsonl(metrics_path, row)
        if out is not None and cfg.checkpoint:
            _save(out, raw, twin, optimizer, source, extra_state, fsdp, info, tokenizer, cfg,
                  {"step": at, "elapsed_s": elapsed()})
        shown = {k: v for k, v in metrics.items() if isinstance(v, float | int) and not isinstance(v, bool)}
        if not shown and "loss" in row:
            shown = {"loss": row["loss"]}
        if shown:
            prog.write(f"step {at}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        res.evals.append(row)
        last_event_s = time.perf_counter() - te
        return stop

    raw.train()
    optimizer.zero_grad(set_to_none=True)  # gradients left on the model by its caller are not ours to apply
    compiled_once = not cfg.compile
    try:
        while True:
            el = elapsed()
            if by_time and info.enabled:
                el = _all_reduce_max(el, info, device)  # every rank takes the same decisions
            frac = el / cfg.time_budget_s if by_time else 0.0
            reason = None
            if cfg.steps is not None and step >= cfg.steps:
                reason = "steps"
            elif by_time:
                est = sorted(recent)[len(recent) // 2] if recent else 0.0
                if el + est + last_event_s >= cfg.time_budget_s:  # the next step and the final event must fit
                    reason = "time"
            elif cfg.max_seconds is not None:
                over = el > cfg.max_seconds
                if dist_mod.any_flag(over, info, str(device)) if info.enabled else over:
                    reason = "time"
            due = step != resumed_at and (
                (reason is not None and (evaluate is not None or out is not None))
                or (step == 0 and evaluate is not None and cfg.eval_at_start)
                or (not by_time and step > 0 and cfg.eval_every is not None and step % cfg.eval_every == 0)
                or (by_time and step > 0 and el >= next_event_s))
            if due:
                if by_time:
                    while next_event_s <= el:
                        next_event_s += every_s
                if event(step) and reason is None:
                    reason = "evaluate"
            if reason is not None:
                res.stopped_by = reason
                break

            ts = time.perf_counter()
            lr = lr_for(step, frac)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr
            loss_sum, msum = 0.0, {}
            for micro in range(cfg.grad_accum):
                batch = source.next()
                if info.enabled and not getattr(source.obj, "sharded", False):
                    batch = shard_batch(batch, info.rank, info.world_size)
                if device.type != "cpu":
                    batch = to_device(batch, device)
                if not raw.training:
                    raw.train()  # a batch source may have switched it (RL rollouts sample in eval mode)
                last_micro = micro == cfg.grad_accum - 1
                sync = _no_sync(wrapped, raw, info, fsdp, last_micro)
                with sync:
                    try:
                        with autocast:
                            out_ = loss_fn(step_model, batch)
                        loss, metrics = out_ if isinstance(out_, tuple) else (out_, {})
                        (loss / cfg.grad_accum if cfg.grad_accum > 1 else loss).backward()
                    except Exception as e:
                        if compiled_once or not type(e).__module__.startswith("torch._"):
                            raise
                        first = (str(e).strip().splitlines() or [""])[0][:200]
                        raise DodaiError(f"torch.compile failed ({type(e).__name__}: {first}); "
                                         "run without --compile") from None
                compiled_once = True
                loss_sum += loss.item()
                for k, v in metrics.items():
                    msum[k] = msum.get(k, 0.0) + _float(v)
            last_loss = loss_sum / cfg.grad_accum
            mvals = {k: v / cfg.grad_accum for k, v in msum.items()}
            if info.enabled:
                last_loss, mvals = _all_reduce_mean(last_loss, mvals, info, device)
            if not math.isfinite(last_loss):
                res.last_loss = last_loss
                if cfg.on_nan == "stop":
                    optimizer.zero_grad(set_to_none=True)
                    res.history.append({"step": step + 1, "loss": last_loss, "lr": lr, **mvals})
                    res.stopped_by = "nan"
                    break
                good = ckpt_io.find_checkpoint(out) if out is not None else None
                raise DodaiError(
                    f"loss became {last_loss} at step {step}; stopped"
                    + (f"; the last good checkpoint (step {_ckpt_step(good)}) is kept in {good}" if good else ""))
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - ts
            step_times.append(dt)
            recent.append(dt)
            del recent[:-5]
            res.train_time_s += dt
            res.last_loss = last_loss
            window.append(last_loss)
            row = {"step": step, "loss": last_loss, "lr": lr, **mvals,
                   "seconds": round(time.perf_counter() - t_perf, 3)}
            res.history.append(row)
            if on_step is not None:
                on_step(row)
            prog.update(step, elapsed() if by_time else step, {"loss": last_loss, "lr": lr})
    finally:
        prog.close()
    raw.train(was_training)
    res.steps = step
    res.elapsed_s = elapsed()
    if cfg.save_model and out is not None:
        model_to_save = _gathered(raw, twin, fsdp, info)
        if info.is_main:
            ckpt_io.save_model_folder(model_to_save, out)
            if tokenizer is not None:
                ckpt_io.save_tokenizer(tokenizer, out / "tokenizer.json")
    return res


# ------------------------------------------------------------------------------------------------ helpers
def _no_sync(wrapped, raw, info, fsdp: bool, last_micro: bool):
    """Gradients are all-reduced on the last micro-batch only."""
    if not info.enabled:
        return nullcontext()
    if fsdp:
        raw.set_requires_gradient_sync(last_micro)
        return nullcontext()
    return nullcontext() if last_micro else wrapped.no_sync()


def _all_reduce_mean(loss: float, mvals: dict, info, device) -> tuple[float, dict]:
    import torch.distributed as dist

    keys = sorted(mvals)
    t = torch.tensor([loss] + [mvals[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t = (t / info.world_size).tolist()
    return t[0], dict(zip(keys, t[1:]))


def _all_reduce_max(x: float, info, device) -> float:
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _meta_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory): the module
    structure (and ``save``) to write weights gathered from FSDP shards through."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _gathered(raw, twin, fsdp: bool, info):
    """The module whose state is the full model: ``raw`` itself, or under FSDP the empty twin filled with the
    weights gathered from every rank (a collective: every rank calls it; only rank 0 gets the weights)."""
    if not fsdp:
        return raw
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if twin is not None:
        twin.load_state_dict(sd, strict=False, assign=True)
    return twin


def _save(out: Path, raw, twin, optimizer, source, extra_state, fsdp: bool, info, tokenizer, cfg, state: dict):
    model_to_save = _gathered(raw, twin, fsdp, info)
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        # before the first step there is no state to save, and asking for it would create it by a zero-gradient
        # step (torch's _init_optim_state), which counts as Adam's first step and shifts its bias correction
        opt_state = get_optimizer_state_dict(raw, optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True)) if optimizer.state else {}
    else:
        opt_state = optimizer.state_dict()
    if not info.is_main:
        return
    state = dict(state)
    state.update({"optimizer": opt_state, "batches": source.state_dict(), "rng": ckpt_io.rng_state(),
                  "fit_config": json.dumps(asdict(cfg)), "fsdp": fsdp})
    if extra_state is not None:
        state["extra"] = extra_state.state_dict()
    ckpt_io.save_checkpoint(out, model_to_save, state, tokenizer)


def _load(out: Path, raw, optimizer, source, extra_state, fsdp: bool, cfg) -> tuple[int, float]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        weights, state = ckpt_io.read_checkpoint(out)
        opts = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(raw, weights, options=opts)
        if not state.get("fsdp"):
            raise DodaiError(f"{out}: the checkpoint was written without FSDP; resume it the way it was started")
        if state["optimizer"]:  # empty: written before the first step
            set_optimizer_state_dict(raw, optimizer, optim_state_dict=state["optimizer"], options=opts)
    else:
        state = ckpt_io.load_checkpoint(out, raw)
        if state.get("fsdp"):
            raise DodaiError(f"{out}: the checkpoint was written by an FSDP run; resume it with FSDP")
        ckpt_io.load_optimizer_state(optimizer, state, out)
    step = int(state["step"])
    if "batches" in state:
        source.load_state_dict(state["batches"])
    elif "batch_generator" in state:  # a checkpoint of the pre-fit trainer: its generator is the data position
        source.load_state_dict({"i": step * cfg.grad_accum, "source": {"generator": state["batch_generator"]}})
    else:
        raise DodaiError(f"{out}: the checkpoint lacks the data position; cannot resume it exactly")
    if extra_state is not None and "extra" in state:
        extra_state.load_state_dict(state["extra"])
    ckpt_io.set_rng_state(state["rng"])
    return step, float(state.get("elapsed_s", 0.0))
