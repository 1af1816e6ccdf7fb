"""What every post-training loop needs from a causal LM: completion log-probs, sampled rollouts, and
scalar heads (reward, value) on the final hidden state.

Sequences are ``prompt + completion`` right-padded into (B, T). Position t of the logits predicts
token t + 1, so per-token quantities live on (B, T − 1) with ``mask[b, t] = 1`` exactly where token
t + 1 belongs to b's completion. Everything else (prompt, padding) is masked out.

The final hidden state (the input of the LM head, after the last norm) is captured with a forward
hook on the model's final norm module, so the models' own code stays untouched.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dodai.errors import DodaiError
from dodai.finetune.losses import token_logps


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int = 0):
    """(x (B, T), mask (B, T − 1), lengths (B,)): right-padded prompt + completion and the completion
    mask on the shifted (predicted-token) axis."""
    if len(prompts) != len(completions) or not prompts:
        raise DodaiError("need one completion per prompt (and at least one)")
    lens = [len(p) + len(c) for p, c in zip(prompts, completions)]
    T = max(lens)
    x = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T - 1)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        x[b, :lens[b]] = torch.tensor(p + c)
        mask[b, len(p) - 1:lens[b] - 1] = 1.0
    return x, mask, torch.tensor(lens)


def _final_norm(model) -> nn.Module:
    for name in ("norm", "ln_f"):
        m = getattr(model, name, None) or getattr(getattr(model, "transformer", None), name, None)
        if isinstance(m, nn.Module):
            return m
    raise DodaiError(f"{type(model).__name__}: no final norm module to read hidden states from")


def forward_hidden(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, T, V), final hidden state (B, T, C)) in one forward pass."""
    got = {}
    h = _final_norm(model).register_forward_hook(lambda m, i, o: got.__setitem__("h", o))
    try:
        logits, _ = model(x)
    finally:
        h.remove()
    return logits, got["h"]


def sequence_logps(model, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs of x[:, 1:] under ``model``, zeroed outside ``mask``: (B, T − 1)."""
    logits, _ = model(x)
    return token_logps(logits[:, :-1], x[:, 1:]) * mask


class ScalarHead(nn.Module):
    """A linear map C -> 1 on the final hidden state: a reward head or a value head."""

    def __init__(self, n_embd: int, zero_init: bool = True):
        super().__init__()
        self.proj = nn.Linear(n_embd, 1)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h.float()).squeeze(-1)


class RewardModel(nn.Module):
    """A causal LM backbone + scalar head read at the last real token of each sequence (Ouyang et al.)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = ScalarHead(backbone.config.n_embd)  # zero: every reply scores 0 before training

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, h = forward_hidden(self.backbone, x)  # (B, T, C)
        last = h[torch.arange(x.shape[0]), lengths - 1]  # (B, C)
        return self.head(last)  # (B,)

    @torch.no_grad()
    def score(self, prompts: list[list[int]], completions: list[list[int]], pad_id: int = 0) -> torch.Tensor:
        was = self.training
        self.eval()
        x, _, lens = pack(prompts, completions, pad_id)
        r = self(x, lens)
        self.train(was)
        return r


def sample_completions(model, prompt: list[int], n: int, max_new_tokens: int, stop_ids, temperature: float = 1.0,
                       seed: int | None = None) -> list[list[int]]:
    """``n`` sampled completions of one prompt (the stop token, when produced, ends and is kept)."""
    from dodai.generate.engine import stream_steps
    from dodai.generate.processors import LogitsPipeline

    outs: list[list[int]] = [[] for _ in range(n)]
    for step in stream_steps(model, prompt, max_new_tokens, LogitsPipeline(temperature=temperature), seed=seed,
                             num_samples=n, stop_tokens=tuple(stop_ids)):
        for r, t in enumerate(step.tokens):
            if t is not None:
                outs[r].append(t)
    forget_inference_tensors(model)
    return outs


def sample_batch(model, prompts: list[list[int]], max_new_tokens: int, stop_ids, seeds: list[int],
                 temperature: float = 1.0, pad_id: int = 0, batch_size: int | None = None) -> list[list[int]]:
    """One sampled completion per prompt, all rows decoded together (left-padded, one KV cache; rows
    leave the batch when they stop): :func:`dodai.generate.batch.generate_batch`. Row r draws from its
    own generator seeded ``seeds[r]``, so completion r is exactly ``sample_completions(model, prompts[r],
    1, ..., seed=seeds[r])[0]`` — the per-prompt reference this fast path is tested against. A prompt may
    appear several times (a GRPO group: one seed per sample)."""
    from dodai.generate.batch import generate_batch
    from dodai.generate.processors import LogitsPipeline

    if len(seeds) != len(prompts):
        raise DodaiError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt")
    outs = generate_batch(model, prompts, max_new_tokens, LogitsPipeline(temperature=temperature),
                          seed=list(seeds), stop_tokens=sorted(stop_ids), pad_id=pad_id, batch_size=batch_size)
    forget_inference_tensors(model)
    return [c.ids for c in outs]


def greedy_batch(model, prompts: list[list[int]], max_new_tokens: int, stop_ids, pad_id: int = 0,
                 batch_size: int | None = None) -> list[list[int]]:
    """Greedy completions of many prompts in batches (stop token dropped): the batched counterpart of
    decoding each prompt alone with temperature 0 (:func:`dodai.finetune.sft.reply`)."""
    from dodai.generate.batch import generate_batch
    from dodai.generate.processors import LogitsPipeline

    outs = generate_batch(model, prompts, max_new_tokens, LogitsPipeline(temperature=0.0),
                          stop_tokens=sorted(stop_ids), pad_id=pad_id, batch_size=batch_size)
    forget_inference_tensors(model)
    return [strip_end(c.ids, stop_ids) for c in outs]


def forget_inference_tensors(model) -> None:
    """Drop tables a model cached while generating under ``torch.inference_mode`` (Llama's RoPE cos/sin):
    autograd refuses inference tensors, so training right after sampling would fail otherwise."""
    for m in model.modules():
        if getattr(m, "_rope", None) is not None:
            m._rope = None


def strip_end(ids: list[int], stop_ids) -> list[int]:
    """The completion without its final stop token (for decoding to text)."""
    return ids[:-1] if ids and ids[-1] in stop_ids else ids
