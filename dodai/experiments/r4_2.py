"""R4.2 Multi-head attention vs grouped-query (GQA) vs multi-query attention (MQA).

Same GPT, same data order and step budget; only the number of key/value heads changes: H_kv = H (MHA,
Vaswani et al. 2017), H_kv = H/2 (GQA, Ainslie et al. 2023), H_kv = 1 (MQA, Shazeer 2019). Sharing K/V
heads shrinks the K/V projections and, above all, the KV cache, by the factor H / H_kv:

    KV-cache bytes per token = n_layer * 2 (K and V) * H_kv * D * bytes per element.

The table reports parameters, cache bytes per token (from :meth:`KVCache.bytes_per_token`) and the
validation loss (nats per character, python-docs corpus) after the same short training run.
"""

from __future__ import annotations

import math
from pathlib import Path

from dodai.experiments.r4_1 import char_data, one_thread, plot_curves, train_lm
from dodai.models.gpt import GPTConfig
from dodai.report import Report


def run(out_dir: Path, quick: bool = False) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick)


def _run(out_dir: Path, quick: bool) -> dict:
    rep = Report(out_dir, "R4.2 Multi-head attention: MHA vs GQA vs MQA")
    rep.text(__doc__.split("\n\n", 1)[1])
    tok, train, val = char_data(150_000 if quick else 1_000_000)
    n_head = 4
    steps = 50 if quick else 1500
    variants = {"MHA": n_head, "GQA": n_head // 2, "MQA": 1}
    rows, curves = [], {}
    for name, kv in variants.items():
        cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=n_head, n_embd=64,
                        n_kv_head=kv, pos_encoding="rope")
        model, st = train_lm(cfg, train, val, steps=steps, bsz=12 if quick else 32)
        cache = model.new_cache(1, 1)
        rows.append({"variant": name, "n_kv_head": kv, "params": st["params"],
                     "kv_bytes_per_token": cache.bytes_per_token(), "val_loss": st["val_loss"],
                     "ms_per_step": st["ms_per_step"]})
        curves[name] = st["curve"]
    rep.table(rows)

    png = plot_curves(curves, out_dir, "MHA vs GQA vs MQA, equal budget")
    rep.image(png, "validation loss during training")
    mha = rows[0]
    rep.text("KV cache relative to MHA: " + ", ".join(
        f"{r['variant']} {r['kv_bytes_per_token'] / mha['kv_bytes_per_token']:.2f}x" for r in rows))
    rep.results.update({"rows": rows, "curves": curves, "uniform_loss": math.log(tok.vocab_size), "quick": quick})
    rep.write()
    return rep.results
