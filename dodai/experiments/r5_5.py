"""R5.5 KV cache: the same tokens with and without the cache, and what the cache saves.

Autoregressive decoding produces token t+1 from tokens 0..t. Without a cache every step runs the model over
the whole prefix again, so step t costs O(t) token-positions of projections and O(t²) attention, and a
sequence of n tokens costs O(n²) projections. With a cache (:class:`dodai.nn.kv_cache.KVCache`) each layer
keeps the keys and values of the positions already seen; a step computes q, k, v for the one new token,
appends k and v, and attends over the cache: O(1) projections per step (Pope et al. 2022, "Efficiently
Scaling Transformer Inference", give the accounting).

The experiment takes dodai's GPT (:mod:`dodai.models.gpt`; 4 layers x 128 wide, 4 heads, context 512 in the
full run, 2 x 64 in quick mode), trains it for a few hundred steps on the built-in python-docs corpus so the
tokens are not noise, and for several lengths decodes greedily (1) with the cache and (2) by recomputing the
whole prefix each step. It records whether the two produce the same tokens, the largest logit difference over
all steps, the wall time of each and the speed-up, and the cache's size from its formula 2 x layers x KV
heads x head dim x bytes per value per token, checked against the bytes the cache's tensors actually hold.

Figures live in ``evidence/R5.5/`` (``dodai roadmap run R5.5``). The machine's load changes timings but not
the token comparison.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dodai.report import Report


@torch.no_grad()
def decode_cached(model, prompt: torch.Tensor, n: int) -> tuple[list[int], list[torch.Tensor]]:
    cache = model.new_cache(1, prompt.shape[1] + n)
    logits, _ = model(prompt, cache=cache)
    out, steps = [], []
    for _ in range(n):
        last = logits[0, -1]
        steps.append(last.clone())
        nxt = int(last.argmax())
        out.append(nxt)
        logits, _ = model(torch.tensor([[nxt]]), cache=cache)
    return out, steps


@torch.no_grad()
def decode_uncached(model, prompt: torch.Tensor, n: int) -> tuple[list[int], list[torch.Tensor]]:
    ids = prompt
    out, steps = [], []
    for _ in range(n):
        logits, _ = model(ids)  # the whole prefix, every step
        last = logits[0, -1]
        steps.append(last.clone())
        nxt = int(last.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out, steps


def _train(quick: bool):
    from dodai.data.corpora import load_corpus
    from dodai.models.gpt import GPT, GPTConfig

    text = load_corpus("python-docs")[: 200_000 if quick else 2_000_000]
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    torch.manual_seed(0)
    if quick:
        cfg = GPTConfig(vocab_size=256, block_size=256, n_layer=2, n_head=2, n_embd=64)
    else:
        cfg = GPTConfig(vocab_size=256, block_size=512, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps, T, B = (30, 64, 8) if quick else (300, 128, 16)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ix = torch.randint(len(data) - T - 1, (B,), generator=g)
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + T + 1] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), cfg, float(loss), steps, text


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    rep = Report(out_dir, "R5.5 KV cache: same tokens, less work")
    rep.text(__doc__.split("\n\n", 1)[1].rsplit("\n\nFigures", 1)[0])
    model, cfg, loss, steps, text = _train(quick)
    prompt_text = "def read_file(path):\n    "
    prompt = torch.tensor([list(prompt_text.encode("utf-8"))])
    lengths = [8, 48] if quick else [32, 128, 384]
    rows, same, worst = [], True, 0.0
    for n in lengths:
        t0 = time.perf_counter()
        a, la = decode_cached(model, prompt, n)
        t_cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        b, lb = decode_uncached(model, prompt, n)
        t_plain = time.perf_counter() - t0
        diff = max(float((x - y).abs().max()) for x, y in zip(la, lb))
        same &= a == b
        worst = max(worst, diff)
        rows.append({"new_tokens": n, "same_tokens": a == b, "max_abs_logit_diff": diff,
                     "cached_s": t_cached, "uncached_s": t_plain, "speedup": t_plain / t_cached,
                     "cached_tok_s": n / t_cached, "uncached_tok_s": n / t_plain})
    cache = model.new_cache(1, cfg.block_size)
    kv = {"n_layer": cache.n_layer, "n_kv_head": cache.n_kv_head, "head_dim": cache.head_dim,
          "bytes_per_value": cache.k[0].element_size(), "bytes_per_token": cache.bytes_per_token(),
          "max_len": cache.max_len}
    kv["allocated_bytes"] = sum(t.numel() * t.element_size() for t in cache.k + cache.v)  # what torch holds
    kv["allocated_per_token"] = kv["allocated_bytes"] / cache.max_len
    sample = bytes(decode_cached(model, prompt, lengths[-1])[0]).decode("utf-8", errors="replace")
    rep.text(f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, {steps} training steps on "
             f"python-docs bytes (last training loss {loss:.2f} nats/byte). Prompt: {prompt_text!r}.")
    rep.table(rows, ["new_tokens", "same_tokens", "max_abs_logit_diff", "cached_s", "uncached_s", "speedup"])
    rep.text(f"KV cache of this model: 2 x {kv['n_layer']} layers x {kv['n_kv_head']} KV heads x {kv['head_dim']} "
             f"x {kv['bytes_per_value']} bytes = {kv['bytes_per_token']:,} bytes per token; the cache for "
             f"{kv['max_len']} positions allocates {kv['allocated_bytes']:,} bytes.")
    rep.code(prompt_text + sample)

    from dodai.viz import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lengths, [r["cached_tok_s"] for r in rows], "o-", label="with KV cache")
    ax.plot(lengths, [r["uncached_tok_s"] for r in rows], "s-", label="recompute the prefix")
    ax.set(xlabel="new tokens", ylabel="tokens / s", title="Greedy decoding speed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "kv_cache.png", dpi=110)
    plt.close(fig)
    rep.image(out_dir / "kv_cache.png", "decoding speed with and without the cache")
    rep.results.update({"quick": quick, "rows": rows, "same_tokens": same, "max_abs_logit_diff": worst, "kv": kv,
                        "train_steps": steps, "threads": torch.get_num_threads()})
    rep.write()
    return rep.results
