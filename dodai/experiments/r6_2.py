"""R6.2 Decoder-only models: GPT-2 and Llama side by side, and a real Llama (SmolLM2-135M-Instruct) at work.

Three parts:

1. **Two families, one table.** dodai's GPT built with GPT-2 small's configuration (Radford et al. 2019)
   and dodai's Llama built with SmolLM2-135M's (Touvron et al. 2023; Allal et al. 2025), both on PyTorch's
   ``meta`` device (shapes only, no memory): where the parameters sit (embeddings, attention, FFN, norms),
   and the design choices that differ — learned positions vs RoPE, LayerNorm vs RMSNorm, GELU vs SwiGLU,
   multi-head vs grouped-query attention, and what GQA does to the KV cache's bytes per token.
2. **The real model reads.** SmolLM2 (loaded from its GGUF file by dodai's own reader into dodai's Llama) is
   scored teacher-forced on held-out documents of the built-in ``python-docs`` corpus: bits per byte, and the
   mean loss at each position of a 512-token window. The loss falls as the position grows — more context,
   better predictions (in-context learning in its plainest form). Caveat: SmolLM2's training data may include
   Python's documentation, so the absolute figure is not a clean held-out number; the trend is the point.
3. **The real model chats.** Two questions rendered with the model's own chat template (from the GGUF
   metadata, rendered in dodai's sandboxed Jinja) and answered greedily by dodai's generation engine.

Exact parity with HF transformers (logits, greedy and beam continuations) and with llama.cpp (100 % top-1
agreement on the same F32 weights) is tested in tests/test_llama_smollm2.py and measured in
benchmarks/llamacpp_agreement.py; this experiment shows what the model does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dodai.report import Report
from dodai.viz import pyplot

QUESTIONS = ["What is the capital of France?", "Write a Python function that returns the square of a number."]
WINDOW = 512


def _component(name: str) -> str:
    n = name.lower()
    if "norm" in n or any(p.startswith("ln_") for p in n.split(".")):
        return "norms"
    if any(k in n for k in ("wte", "wpe", "tok_emb", "embed")):
        return "embeddings"
    if "lm_head" in n or n.startswith("output."):
        return "output head"
    if any(k in n for k in ("attn", "wq", "wk", "wv", "wo", "c_proj_attn")):
        return "attention"
    if any(k in n for k in ("mlp", "ffn", "w_gate", "w_up", "w_down", "c_fc")):
        return "feed-forward"
    return "other"


def _breakdown(model: torch.nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():  # tied weights are yielded once
        if id(p) in seen:
            continue
        seen.add(id(p))
        c = _component(name)
        out[c] = out.get(c, 0) + p.numel()
    out["total"] = sum(out.values())
    return out


def architectures() -> list[dict]:
    """GPT-2 small (dodai GPT) and SmolLM2-135M (dodai Llama), built on the meta device."""
    from dodai.models.gpt import GPT, GPTConfig
    from dodai.models.llama import Llama, LlamaConfig

    gpt_cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                        activation="gelu_tanh", tie_weights=True)
    llama_cfg = LlamaConfig()  # the defaults are SmolLM2-135M's shapes
    with torch.device("meta"):
        gpt, llama = GPT(gpt_cfg), Llama(llama_cfg)
    fp32 = 4
    rows = []
    for name, m, cfg, info in (
        ("GPT-2 small (dodai GPT)", gpt, gpt_cfg,
         dict(positions="learned table", norm="LayerNorm (pre)", ffn="GELU, 4C", attention="multi-head 12/12",
              kv_heads=gpt_cfg.n_head, head_dim=gpt_cfg.n_embd // gpt_cfg.n_head)),
        ("SmolLM2-135M (dodai Llama)", llama, llama_cfg,
         dict(positions="RoPE", norm="RMSNorm (pre)", ffn=f"SwiGLU, {llama_cfg.ffn_hidden}",
              attention=f"grouped-query {llama_cfg.n_head}/{llama_cfg.n_kv_head}", kv_heads=llama_cfg.n_kv_head,
              head_dim=llama_cfg.n_embd // llama_cfg.n_head)),
    ):
        b = _breakdown(m)
        kv_bytes = 2 * info["kv_heads"] * info["head_dim"] * fp32 * cfg.n_layer  # K and V, every layer
        rows.append({"model": name, "layers": cfg.n_layer, "width": cfg.n_embd, "vocab": cfg.vocab_size,
                     "context": cfg.block_size, **{k: v for k, v in info.items() if k not in ("kv_heads",)},
                     "kv_cache_bytes_per_token": kv_bytes, "params": b})
    return rows


def _held_out_docs(tok, n_docs: int, window: int = WINDOW) -> list[list[int]]:
    """Token ids of the first ``n_docs`` validation documents (dodai's hash split) with >= window tokens."""
    from dodai.data.corpora import corpus_documents
    from dodai.data.prepare import is_val_document

    out = []
    for doc in corpus_documents("python-docs"):
        if len(doc) < 3 * WINDOW or not is_val_document(doc):  # too short to fill a window; skip the tokenizer call
            continue
        ids = tok.encode(doc)
        if len(ids) >= WINDOW:
            out.append(ids[:WINDOW])
            if len(out) == n_docs:
                break
    return out


def score(model, tok, docs: list[list[int]]) -> dict:
    """Per-position mean loss (nats) and bits per byte over the documents."""
    losses = []
    n_bytes = 0
    with torch.inference_mode():
        for ids in docs:
            x = torch.tensor([ids])
            logits = model(x)[0][0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")
            losses.append(nll)
            n_bytes += len(tok.decode(ids[1:]).encode("utf-8"))
    L = torch.stack(losses)  # (docs, WINDOW-1)
    total = L.sum().item()
    return {"docs": len(docs), "mean_loss": L.mean().item(), "bits_per_byte": total / math.log(2) / n_bytes,
            "per_position": L.mean(0).tolist()}


def chat(model, tok, questions: list[str], max_new_tokens: int) -> list[dict]:
    from dodai.chat_template import ChatTemplate
    from dodai.generate.engine import complete

    specials = {i: s for s, i in (getattr(tok, "special_tokens", {}) or {}).items()}
    tmpl = ChatTemplate(tok.chat_template, {"bos_token": specials.get(getattr(tok, "bos_id", None), ""),
                                            "eos_token": specials.get(getattr(tok, "eos_id", None), "")})
    out = []
    for q in questions:
        prompt = tmpl.render([{"role": "user", "content": q}], add_generation_prompt=True)
        ids = tok.encode(prompt)
        c = complete(model, ids, max_new_tokens, eos_id=tok.eos_id, tokenizer=tok)[0]
        out.append({"question": q, "answer": c.text.strip(), "finish": c.finish_reason,
                    "prompt_tokens": len(ids)})
    return out


FACTS = ["The capital of France is", "The largest planet in the solar system is", "Water is made of hydrogen and"]


def next_tokens(model, tok, prompts: list[str], k: int = 5) -> list[dict]:
    """The model's top-k next tokens (with probabilities) after each plain-text prompt."""
    out = []
    with torch.inference_mode():
        for p in prompts:
            logits = model(torch.tensor([tok.encode(p)]))[0][0, -1].float()
            probs = torch.softmax(logits, -1)
            top = probs.topk(k)
            out.append({"prompt": p, "top": [(tok.decode([i]), round(v, 4)) for v, i in
                                              zip(top.values.tolist(), top.indices.tolist())]})
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    from dodai.models import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = architectures()
    model, tok = load_model("smollm2-135m-instruct")
    window = 256 if quick else WINDOW
    docs = _held_out_docs(tok, 2 if quick else 12, window)
    sc = score(model, tok, docs)
    facts = next_tokens(model, tok, FACTS[:1] if quick else FACTS)
    answers = chat(model, tok, QUESTIONS[:1] if quick else QUESTIONS, 16 if quick else 96)

    per = sc["per_position"]
    q = len(per) // 4
    first, last = sum(per[:q]) / q, sum(per[-q:]) / q
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(per) + 1), per, lw=0.6, alpha=0.5, label="mean loss at position")
    k = 16
    smooth = [sum(per[i:i + k]) / k for i in range(0, len(per) - k + 1)]
    ax.plot(range(k // 2 + 1, k // 2 + 1 + len(smooth)), smooth, lw=2, label=f"running mean ({k})")
    ax.set_xlabel("position in the window (tokens of context before the predicted one)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"SmolLM2-135M on {sc['docs']} held-out python-docs documents")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss_by_position.png", dpi=120)
    plt.close(fig)

    rep = Report(out_dir, "R6.2 Decoder-only models: GPT-2 and Llama, and SmolLM2-135M at work")
    rep.heading("Two families")
    keys = ["layers", "width", "vocab", "context", "positions", "norm", "ffn", "attention", "head_dim"]
    names = [r["model"] for r in arch]
    rows = [{"": k, **{n: str(r[k]) for n, r in zip(names, arch)}} for k in keys]
    rows += [{"": f"params: {c}", **{n: f"{r['params'].get(c, 0) / 1e6:.1f} M" for n, r in zip(names, arch)}}
             for c in ("embeddings", "attention", "feed-forward", "norms", "output head", "total")]
    rows.append({"": "KV cache, bytes/token (fp32, all layers)",
                 **{n: f"{r['kv_cache_bytes_per_token']:,}" for n, r in zip(names, arch)}})
    rep.table(rows, ["", *names])
    rep.text("Both tie the output head to the embedding matrix, so it adds no parameters. Grouped-query attention "
             "(3 K/V heads shared by 9 query heads) makes SmolLM2's KV cache per token a fraction of what "
             "multi-head attention at the same width would need.")
    rep.heading("Reading held-out text")
    rep.text(f"{sc['docs']} validation documents of the built-in python-docs corpus, {window} tokens each, "
             f"teacher-forced: mean loss {sc['mean_loss']:.3f} nats/token, **{sc['bits_per_byte']:.3f} bits per "
             f"byte**. Mean loss over the first quarter of the window {first:.3f}, over the last quarter "
             f"{last:.3f}: predictions improve as context accumulates.")
    rep.image(out_dir / "loss_by_position.png", "loss at each position of the window")
    rep.heading("What it knows: the next token after a plain prompt")
    rep.table([{"prompt": f["prompt"], "top-5 next tokens (probability)":
                ", ".join(f"{t!r} {p:.3f}" for t, p in f["top"])} for f in facts])
    rep.heading("Chatting (the model's own template, greedy)")
    for a in answers:
        rep.text(f"**Q:** {a['question']}")
        rep.code(a["answer"])
    rep.results.update({"window": window, "params_loaded": model.num_params(), "architectures": arch,
                        "held_out": {k: v for k, v in sc.items() if k != "per_position"},
                        "loss_first_quarter": first, "loss_last_quarter": last, "facts": facts, "chat": answers,
                        "per_position": per})
    rep.write()
    return rep.results
