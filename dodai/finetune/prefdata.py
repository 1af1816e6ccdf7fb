"""Preference data and the shared plumbing of ``dodai dpo``, ``dodai grpo`` and ``dodai rlhf``.

Pairs JSONL, one pair per line: ``{"messages": [...prompt messages...], "chosen": "...", "rejected": "..."}``
(the prompt is rendered with the model's chat template and the generation prompt; each reply gets the
template's end token appended). ``dates`` instead builds pairs from the built-in task, labelled by its judge.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from dodai.errors import DodaiError


def load_pairs_jsonl(path: str | Path) -> list[tuple[list[dict], str, str]]:
    from dodai.io import read_user_text

    p = Path(path)
    lines = read_user_text(p).splitlines()  # a regular file only (not a FIFO or /dev/zero), bounded size
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            raise DodaiError(f"{p}:{n}: not valid JSON") from None
        if not isinstance(obj, dict):
            raise DodaiError(f"{p}:{n}: expected an object with messages, chosen, rejected")
        msgs, c, r = obj.get("messages"), obj.get("chosen"), obj.get("rejected")
        if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                         and isinstance(m.get("content"), str) for m in msgs)):
            raise DodaiError(f"{p}:{n}: 'messages' must be a non-empty list of {{role, content}} strings")
        if not (isinstance(c, str) and isinstance(r, str) and c and r):
            raise DodaiError(f"{p}:{n}: 'chosen' and 'rejected' must be non-empty strings")
        out.append(([{"role": m["role"], "content": m["content"]} for m in msgs], c, r))
    if not out:
        raise DodaiError(f"{p}: no preference pairs")
    return out


def date_pairs(n: int, seed: int) -> list[tuple[list[dict], str, str]]:
    from dodai.finetune import tasks

    return [(e.messages(False), c, r) for e, c, r in tasks.preference_pairs(tasks.make_dates(n, seed), seed)]


def end_id(fmt) -> int:
    ids = sorted(fmt.end_ids)
    if not ids:
        raise DodaiError("the tokenizer has no end-of-turn token (eos) to close replies with")
    return ids[0]


def encode_pairs(fmt, items) -> list[tuple[list[int], list[int], list[int]]]:
    e = end_id(fmt)
    return [(fmt.prompt_ids(m), fmt.tok.encode(c) + [e], fmt.tok.encode(r) + [e]) for m, c, r in items]


def load_policy(spec: str, lora_rank: int, lora_alpha: float = 16.0,
                targets: tuple[str, ...] = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")):
    """(policy ready to train, frozen reference copy, tokenizer, formatter)."""
    from dodai.finetune.lora import inject_lora
    from dodai.finetune.sft import ChatFormatter
    from dodai.models import load_model

    if lora_rank < 0:
        raise DodaiError(f"--lora-rank must be >= 0, got {lora_rank}")
    model, tok = load_model(spec)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    if lora_rank:
        inject_lora(model, lora_rank, lora_alpha, 0.0, targets)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model, ref, tok, ChatFormatter(tok)


def save_policy(model, tok, out: Path, lora_rank: int) -> dict:
    from dodai.finetune.lora import remove_lora, save_adapters

    out.mkdir(parents=True, exist_ok=True)
    saved = {}
    if lora_rank:
        saved["adapters"] = str(save_adapters(model, out / "adapters.safetensors"))
    plain = remove_lora(model, merge=True)
    if hasattr(plain, "save"):
        plain.save(out / "model", tokenizer=tok)
        saved["model_folder"] = str(out / "model")
    return saved


def add_common_arguments(p, default_steps: int, default_lr: float, resume: bool = True) -> None:
    p.add_argument("--model", required=True, help="registry name (smollm2-135m-instruct), .gguf file or model folder")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank; 0 = train every weight (default 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    p.add_argument("--steps", type=int, default=default_steps, help=f"optimizer steps (default {default_steps})")
    p.add_argument("--batch-size", type=int, default=8, help="pairs or prompts per step (default 8)")
    p.add_argument("--learning-rate", type=float, default=default_lr, help=f"learning rate (default {default_lr})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype of the update")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for the update step (on CPU needs a C++ compiler)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="checkpoint into OUT/ckpt every N steps (default: at the end only)")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt (same flags as the first run)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def check_common(args) -> None:
    for name in ("steps", "batch_size", "grad_accum"):
        if getattr(args, name) <= 0:
            raise DodaiError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        raise DodaiError(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.checkpoint_every < 0:
        raise DodaiError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # LoRA's A matrices and the reward head are drawn from it: runs repeat


def step_logger(path: Path, label: str, resume_dir: Path | None = None):
    """A ``log(row)`` that appends one JSON line per step to ``path`` (progress on stderr is the loop's).
    With ``resume_dir`` (a run being resumed) the rows of steps after its checkpoint are dropped first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if resume_dir is not None and path.is_file():
        from dodai.train.checkpoint import MARKER, find_checkpoint

        d = find_checkpoint(resume_dir)
        at = json.loads((d / MARKER).read_text())["step"] if d is not None else 0
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = "".join(ln + "\n" for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= at)
    f = open(path, "w", encoding="utf-8")
    f.write(kept)

    def log(row: dict) -> None:
        f.write(json.dumps({"stage": label, **row}) + "\n")
        f.flush()

    log.close = f.close
    return log
