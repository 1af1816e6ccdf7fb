"""Supervised fine-tuning on chat data (R5.2): chat template rendering, assistant-only loss, batches.

Data: JSONL, one conversation per line, ``{"messages": [{"role": ..., "content": ...}, ...]}``.

**Loss mask.** The conversation is rendered with the model's own chat template (dodai.chat_template,
sandboxed). To know which characters belong to the assistant we render prefixes: for the assistant
message i, ``P = render(messages[:i], add_generation_prompt=True)`` ends with the assistant header and
``F = render(messages[:i+1])`` adds the reply, so ``F[len(P):]`` is ``content + end marker`` (for
ChatML ``"…<|im_end|>\\n"``). The labelled part is the content plus the special end token that closes it
(the model must learn to stop); everything else (system, user, headers, the newline after the end
token) gets label -100. Each piece is tokenized separately and concatenated, so a label boundary is
always a token boundary; tests check that the masked-in tokens decode to exactly the replies + end token.

Loss: ``mean over labelled positions t of −log p(x_t | x_<t)`` (logits at t−1 predict token t).
Batches are **length-bucketed**: sort by length, cut into batches, shuffle the batches, right-pad
(padding is after the real tokens, so a causal model never attends to it; its labels are -100).
Full fine-tuning or LoRA (:mod:`dodai.finetune.lora`) — the loop trains whatever has ``requires_grad``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dodai.errors import DodaiError

IGNORE = -100


# ---- data ----------------------------------------------------------------------------------------

def load_chat_jsonl(path: str | Path, max_lines: int = 10_000_000) -> list[list[dict]]:
    """Conversations from a JSONL file; each line ``{"messages": [{"role", "content"}, ...]}`` with at
    least one assistant message. Any malformed line → one-line DodaiError naming the line."""
    from dodai.io import open_user_file

    p = Path(path)
    fd, _ = open_user_file(p)  # a regular file only: a FIFO or /dev/zero is a one-line error, not a hang
    f = open(fd, encoding="utf-8")
    out = []
    with f:
        try:
            for n, line in enumerate(f, 1):
                if n > max_lines:
                    raise DodaiError(f"{p}: more than {max_lines} lines")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    raise DodaiError(f"{p}:{n}: not valid JSON") from None
                msgs = obj.get("messages") if isinstance(obj, dict) else None
                if not isinstance(msgs, list) or not msgs:
                    raise DodaiError(f"{p}:{n}: expected {{\"messages\": [...]}} with a non-empty list")
                for m in msgs:
                    if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                            and isinstance(m.get("content"), str)):
                        raise DodaiError(f"{p}:{n}: every message needs string 'role' and 'content'")
                if not any(m["role"] == "assistant" for m in msgs):
                    raise DodaiError(f"{p}:{n}: no assistant message (nothing to learn)")
                out.append([{"role": m["role"], "content": m["content"]} for m in msgs])
        except UnicodeDecodeError:
            raise DodaiError(f"{p}: not UTF-8 text") from None
    if not out:
        raise DodaiError(f"{p}: no conversations")
    return out


def write_chat_jsonl(conversations: list[list[dict]], path: str | Path) -> Path:
    from dodai.io import atomic_write_text

    text = "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in conversations)
    atomic_write_text(Path(path), text)
    return Path(path)


class ChatFormatter:
    """Renders conversations with a tokenizer's chat template and tokenizes them with labels."""

    def __init__(self, tokenizer, template: str | None = None):
        from dodai.generate.session import chat_template_for

        self.tok = tokenizer
        specials = dict(getattr(tokenizer, "special_tokens", {}) or {})
        self.template = chat_template_for(tokenizer, template)
        # longest first, so "<|im_end|>" wins over a shorter special that is its prefix
        self._specials = sorted(specials, key=len, reverse=True)
        self.end_ids: set[int] = set()  # the tokens that close an assistant turn (learned stop tokens)
        if getattr(tokenizer, "eos_id", None) is not None:
            self.end_ids.add(tokenizer.eos_id)

    def prompt(self, messages: list[dict]) -> str:
        """The string the model continues to answer (ends with the assistant header)."""
        return self.template.render(messages, add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt's ids; control strings inside message contents stay text (R8.2 injection defence)."""
        from dodai.safety.guards import safe_chat_ids

        return safe_chat_ids(self.template, self.tok, messages)

    def segments(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, trained?) pieces whose concatenation is the full render."""
        full = self.template.render(messages, add_generation_prompt=False)
        pieces: list[tuple[str, bool]] = []
        done = 0  # characters of `full` already assigned
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            p = self.template.render(messages[:i], add_generation_prompt=True)
            f = self.template.render(messages[: i + 1], add_generation_prompt=False)
            if not full.startswith(f):
                raise DodaiError("the chat template does not render conversations prefix by prefix; "
                                 "cannot locate the assistant replies")
            if not (f.startswith(p) and f[len(p):].startswith(m["content"])):
                # e.g. a template that inserts a default system prompt only when messages exist: fall back
                # to the last occurrence of the reply text in its own render
                k = f.rfind(m["content"]) if m["content"] else -1
                if k < done:
                    raise DodaiError("the chat template changes the assistant text; cannot locate the replies")
                p = f[:k]
            if len(p) < done:
                raise DodaiError("the chat template does not render conversations prefix by prefix")
            rest = f[len(p) + len(m["content"]):]
            end = next((s for s in self._specials if rest.startswith(s)), "")
            pieces.append((full[done:len(p)], False))
            pieces.append((m["content"] + end, True))
            done = len(p) + len(m["content"]) + len(end)
        pieces.append((full[done:], False))
        return [(t, trained) for t, trained in pieces if t]

    def encode(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """(ids, labels): labels[t] = ids[t] on assistant tokens (+ end token), IGNORE elsewhere."""
        ids: list[int] = []
        labels: list[int] = []
        for text, trained in self.segments(messages):
            t = self.tok.encode(text)
            ids += t
            labels += t if trained else [IGNORE] * len(t)
            if trained and t and t[-1] in (self.tok.special_tokens or {}).values():
                self.end_ids.add(t[-1])
        return ids, labels


def bucket_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, chunked, chunks shuffled)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def collate(items: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest item: (x (B, T), labels (B, T))."""
    T = max(len(ids) for ids, _ in items)
    x = torch.full((len(items), T), pad_id, dtype=torch.long)
    y = torch.full((len(items), T), IGNORE, dtype=torch.long)
    for b, (ids, labels) in enumerate(items):
        x[b, :len(ids)] = torch.tensor(ids)
        y[b, :len(labels)] = torch.tensor(labels)
    return x, y


def masked_lm_loss(model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions: logits[:, t-1] predict labels[:, t]."""
    logits, _ = model(x)  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


# ---- training ------------------------------------------------------------------------------------

@dataclass
class SFTConfig:
    steps: int = 100  # optimizer steps
    batch_size: int = 8  # conversations per step
    lr: float = 2e-5  # peak learning rate (LoRA wants ~1e-3..5e-3, full fine-tuning ~1e-5..1e-4)
    weight_decay: float = 0.0
    warmup: int = 10  # linear warm-up steps, then cosine to lr / 10
    grad_clip: float = 1.0  # gradient-norm clip (0 = off)
    max_len: int = 256  # conversations are cut to this many tokens
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo"])
    seed: int = 0
    grad_accum: int = 1  # micro-batches of batch_size conversations per optimizer step
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False  # torch.compile the model for the training step
    checkpoint_every: int = 0  # with an output folder: checkpoint every this many steps (0: at the end only)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "max_len"):
            if getattr(self, name) <= 0:
                raise DodaiError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise DodaiError(f"learning rate must be positive, got {self.lr}")
        if self.lora_rank < 0:
            raise DodaiError(f"lora rank must be >= 0, got {self.lora_rank}")

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, cfg: SFTConfig) -> float:
    import math

    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def prepare(model, cfg: SFTConfig) -> tuple[int, int]:
    """Inject LoRA when ``cfg.lora_rank`` > 0 (else unfreeze everything); (trainable, total) params."""
    from dodai.finetune.lora import count_parameters, inject_lora

    cfg.validate()
    if cfg.lora_rank:
        inject_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_targets))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return count_parameters(model)


def train_sft(model, data: list[tuple[list[int], list[int]]], cfg: SFTConfig, pad_id: int = 0,
              log: Callable[[dict], None] | None = None, progress: bool = False, out_dir=None,
              resume: bool = False) -> list[dict]:
    """Train ``model`` (whatever requires grad: call :func:`prepare` first) on tokenized (ids, labels)
    pairs for ``cfg.steps`` steps with :func:`dodai.train.fit.fit`. Returns the per-step history
    [{step, loss, lr, seconds}]. ``out_dir`` gets checkpoints (``resume`` continues from them).

    Under data parallelism each rank's loss is the mean over *its* labelled tokens, so the update is the
    mean of per-rank means, not exactly the single-process token mean (HF Trainer's default does the same);
    with ``grad_accum`` > 1 likewise the mean of the micro-batches' token means."""
    from dodai.train.fit import FitConfig, fit

    cfg.validate()
    data = [(ids[:cfg.max_len], labels[:cfg.max_len]) for ids, labels in data]
    data = [d for d in data if any(t != IGNORE for t in d[1][1:])]
    if not data:
        raise DodaiError("no training example has an assistant token within max-len")
    if not any(p.requires_grad for p in model.parameters()):
        raise DodaiError("nothing to train: every parameter is frozen")
    lengths = [len(ids) for ids, _ in data]

    def batches():  # length-bucketed epochs, each reshuffled with its own seed
        epoch = 0
        while True:
            order = bucket_batches(lengths, cfg.batch_size, cfg.seed + epoch)
            epoch += 1
            while order:
                yield collate([data[i] for i in order.pop()], pad_id)

    fcfg = FitConfig(steps=cfg.steps, optimizer="adamw", lr=cfg.lr, betas=(0.9, 0.999),
                     weight_decay=cfg.weight_decay, decay_matrices_only=False, grad_clip=cfg.grad_clip,
                     grad_accum=cfg.grad_accum, dtype=cfg.dtype, compile=cfg.compile, seed=cfg.seed,
                     eval_every=cfg.checkpoint_every or None, quiet=not progress, desc="sft",
                     metrics_file="events.jsonl")
    res = fit(model, batches(), lambda m, b: masked_lm_loss(m, *b), fcfg, out_dir=out_dir, resume=resume,
              on_step=log, lr_fn=lambda step: lr_at(step, cfg))
    model.eval()
    return res.history


@torch.no_grad()
def eval_loss(model, data: list[tuple[list[int], list[int]]], pad_id: int = 0, batch_size: int = 16) -> float:
    """Mean masked loss over ``data`` (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        x, y = collate(data[i:i + batch_size], pad_id)
        n = int((y[:, 1:] != IGNORE).sum())
        if n:
            total += float(masked_lm_loss(model, x, y)) * n
            count += n
    return total / max(count, 1)


# ---- evaluation by generation ----------------------------------------------------------------------

def reply(model, fmt: ChatFormatter, messages: list[dict], max_new_tokens: int = 24) -> str:
    """Greedy reply to ``messages`` (stops at an end token, which is not part of the text)."""
    from dodai.finetune.policy import forget_inference_tensors
    from dodai.generate.sampling import generate

    ids = fmt.prompt_ids(messages)
    out = []
    for t in generate(model, ids, max_new_tokens, temperature=0):
        if t in fmt.end_ids:
            break
        out.append(t)
    forget_inference_tensors(model)
    return fmt.tok.decode(out)


def task_accuracy(model, fmt: ChatFormatter, examples, max_new_tokens: int = 24,
                  batch_size: int | None = None) -> tuple[float, list[str]]:
    """Exact-match accuracy of greedy replies on :class:`dodai.finetune.tasks.DateExample` items.

    ``batch_size`` None: each prompt decoded alone (:func:`reply`, the reference); an int: prompts decoded
    together in left-padded batches of that many rows (:func:`dodai.finetune.policy.greedy_batch`),
    tested to give the same replies."""
    from dodai.finetune.tasks import is_correct

    msgs = [ex.messages(with_answer=False) for ex in examples]
    if batch_size is None or not msgs:
        replies = [reply(model, fmt, m, max_new_tokens) for m in msgs]
    else:
        from dodai.finetune.policy import greedy_batch

        pad = fmt.tok.eos_id if fmt.tok.eos_id is not None else 0
        outs = greedy_batch(model, [fmt.prompt_ids(m) for m in msgs], max_new_tokens, fmt.end_ids, pad, batch_size)
        replies = [fmt.tok.decode(o) for o in outs]
    acc = sum(is_correct(r, ex) for r, ex in zip(replies, examples)) / max(len(examples), 1)
    return acc, replies
