"""T5's span-corruption pre-training objective (Raffel et al. 2020, section 3.1.4 and 3.3.4).

A sequence of L tokens is split into alternating runs of kept and *noise* tokens. About
``noise_density`` (15 %) of the tokens are noise, in spans of mean length ``mean_span`` (3). Each noise
span is replaced in the **input** by one sentinel token; the **target** lists, for each span, its sentinel
followed by the tokens it hid, then a closing sentinel when the text ends with kept tokens:

    original  : The quick brown fox jumps over the lazy dog
    input     : The quick <X0> jumps over <X1> dog </s>
    target    : <X0> brown fox <X1> the lazy <X2> </s>

Sentinels are used in order (<X0>, <X1>, ...), one per span, so the input, the target and the sentinel
list reconstruct the original exactly (:func:`reconstruct`, the invariant the tests check).

The noise mask follows T5's ``random_spans_noise_mask``: n_noise = round(L * density) (at least 1, at most
L - 1), n_spans = max(1, round(n_noise / mean_span)); the noise tokens and the kept tokens are each cut into
n_spans non-empty runs by a uniformly random composition, and the runs interleave starting with kept
tokens. Spans therefore never touch, and the noise fraction is exactly n_noise / L (close to 15 %).

Targets are short (about 15 % + one sentinel per span), which is why T5 pre-trains faster per token than a
full-reconstruction denoiser.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from dodai.errors import DodaiError


def _random_segmentation(n_items: int, n_segments: int, rng: random.Random) -> list[int]:
    """A uniformly random composition of n_items into n_segments positive parts."""
    cuts = sorted(rng.sample(range(1, n_items), n_segments - 1))  # distinct cut points
    edges = [0] + cuts + [n_items]
    return [b - a for a, b in zip(edges, edges[1:])]


def random_spans_noise_mask(length: int, rng: random.Random, noise_density: float = 0.15,
                            mean_span: float = 3.0) -> list[bool]:
    """Noise mask (True = noise) over ``length`` tokens; starts with kept tokens (see module docstring)."""
    if length < 2:
        raise DodaiError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0.0 < noise_density < 1.0 or mean_span < 1.0:
        raise DodaiError("noise_density must be in (0, 1) and mean_span >= 1")
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(1, round(n_noise / mean_span))
    n_keep = length - n_noise
    n_spans = min(n_spans, n_noise, n_keep)  # each run must be non-empty
    noise_lens = _random_segmentation(n_noise, n_spans, rng)
    keep_lens = _random_segmentation(n_keep, n_spans, rng)
    mask: list[bool] = []
    for k, z in zip(keep_lens, noise_lens):
        mask += [False] * k + [True] * z
    return mask


def apply_noise_mask(ids: Sequence[int], mask: Sequence[bool], sentinels: Sequence[int]) -> tuple[list[int], list[int]]:
    """(inputs, targets) without EOS: each noise span -> one sentinel in the inputs; the targets hold
    each sentinel followed by its span, and a final sentinel if the text ends with kept tokens."""
    if len(ids) != len(mask):
        raise DodaiError("ids and mask differ in length")
    inputs: list[int] = []
    targets: list[int] = []
    s = 0  # next sentinel
    prev = False
    for tok, noise in zip(ids, mask):
        if noise and not prev:
            if s >= len(sentinels):
                raise DodaiError(f"more noise spans than the {len(sentinels)} sentinel tokens")
            inputs.append(sentinels[s])
            targets.append(sentinels[s])
            s += 1
        (targets if noise else inputs).append(tok)
        prev = noise
    if not prev:  # the closing sentinel marks "nothing more was hidden"
        if s >= len(sentinels):
            raise DodaiError(f"more noise spans than the {len(sentinels)} sentinel tokens")
        targets.append(sentinels[s])
    return inputs, targets


def span_corrupt(ids: Sequence[int], sentinels: Sequence[int], rng: random.Random, noise_density: float = 0.15,
                 mean_span: float = 3.0, eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """One example: (inputs, targets), each followed by ``eos_id`` when given."""
    mask = random_spans_noise_mask(len(ids), rng, noise_density, mean_span)
    inputs, targets = apply_noise_mask(ids, mask, sentinels)
    if eos_id is not None:
        inputs.append(eos_id)
        targets.append(eos_id)
    return inputs, targets


def reconstruct(inputs: Sequence[int], targets: Sequence[int], sentinels: Sequence[int],
                eos_id: int | None = None) -> list[int]:
    """Invert :func:`span_corrupt`: put each sentinel's hidden span back into the inputs."""
    sent = {t: k for k, t in enumerate(sentinels)}
    inputs = [t for t in inputs if t != eos_id]
    targets = [t for t in targets if t != eos_id]
    spans: dict[int, list[int]] = {}
    cur: int | None = None
    for t in targets:
        if t in sent:
            cur = sent[t]
            spans[cur] = []
        elif cur is None:
            raise DodaiError("targets must start with a sentinel")
        else:
            spans[cur].append(t)
    out: list[int] = []
    for t in inputs:
        if t in sent:
            if sent[t] not in spans:
                raise DodaiError(f"sentinel {t} of the inputs is missing from the targets")
            out += spans[sent[t]]
        else:
            out.append(t)
    return out


def input_length_for(target_inputs_len: int, noise_density: float = 0.15, mean_span: float = 3.0) -> int:
    """The raw chunk length L whose corrupted inputs (with EOS) have about ``target_inputs_len`` tokens
    (T5's ``compute_input_and_target_lengths``, solved by search)."""
    best = 2
    for length in range(2, 20 * target_inputs_len + 2):
        n_noise = min(max(round(length * noise_density), 1), length - 1)
        n_spans = max(1, round(n_noise / mean_span))
        if length - n_noise + n_spans + 1 > target_inputs_len:
            break
        best = length
    return best


def span_corruption_batch(stream: Sequence[int], batch: int, chunk_len: int, sentinels: Sequence[int],
                          eos_id: int, pad_id: int, rng: random.Random, noise_density: float = 0.15,
                          mean_span: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random batch from a token stream -> (input_ids (B, S), attention_mask (B, S), labels (B, T)),
    right-padded; padded label positions are -100 (ignored by the loss)."""
    if len(stream) <= chunk_len:
        raise DodaiError(f"token stream of {len(stream)} tokens is too short for chunks of {chunk_len}")
    ins, tgs = [], []
    for _ in range(batch):
        st = rng.randrange(0, len(stream) - chunk_len)
        i, t = span_corrupt(stream[st:st + chunk_len], sentinels, rng, noise_density, mean_span, eos_id)
        ins.append(i)
        tgs.append(t)
    return pad_pairs(ins, tgs, pad_id)


def pad_pairs(inputs: list[list[int]], targets: list[list[int]], pad_id: int):
    """Right-pad encoder inputs (mask 1/0) and labels (-100) into tensors."""
    s = max(map(len, inputs))
    t = max(map(len, targets))
    x = torch.full((len(inputs), s), pad_id, dtype=torch.long)
    am = torch.zeros((len(inputs), s), dtype=torch.long)
    y = torch.full((len(targets), t), -100, dtype=torch.long)
    for r, (i, tg) in enumerate(zip(inputs, targets)):
        x[r, :len(i)] = torch.tensor(i)
        am[r, :len(i)] = 1
        y[r, :len(tg)] = torch.tensor(tg)
    return x, am, y
