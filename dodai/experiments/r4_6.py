"""R4.6 Japanese end to end: byte-level BPE vs Unigram at the same vocabulary size.

Both tokenizers are trained on the same slice of Japanese man pages (Debian manpages-ja, split by
document), then the same small GPT (same size, steps, data seed) is pre-trained on each tokenization.
Models with different tokenizers see different numbers of tokens, so their per-token losses are not
comparable; bits per byte is:

    bpb = (mean loss per token in nats) * (held-out tokens) / (held-out UTF-8 bytes) / ln 2

computed here over *every* held-out token (consecutive windows of ``block_size``), and the held-out
bytes are the same for both tokenizers. Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level
variant, Radford et al. 2019) merges byte pairs greedily by frequency; Unigram (Kudo 2018, as in
SentencePiece) keeps the pieces that maximise the corpus likelihood under a unigram language model.

Text preparation, shared by both: each line is NFKC-normalised with whitespace runs collapsed to one
space (the normalisation SentencePiece applies), empty lines dropped; a line's tokens are followed by
the tokenizer's end-of-text id, which stands for the newline (counted as one byte). Each tokenizer
then round-trips every held-out line exactly.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import torch

from dodai.errors import DodaiError
from dodai.experiments.r4_1 import one_thread, train_lm
from dodai.info import bits_per_byte
from dodai.models.gpt import GPTConfig
from dodai.report import Report
from dodai.viz import pyplot

CORPUS = "ja-manpages"
SENTENCES = 5


def load_text(quick: bool) -> tuple[list[str], list[str], dict]:
    """(train lines, held-out lines, split meta) from the ja-manpages corpus, split by document.

    Pulls the corpus when it is not in the cache yet (``dodai data pull ja-manpages``); a failed pull
    raises its one-line :class:`DodaiError`.
    """
    from dodai.data.corpora import CORPORA
    from dodai.data.prepare import load_split

    if not CORPORA[CORPUS].path().is_file():
        from dodai.data.pull import pull

        pull(CORPUS)
    split = load_split(CORPUS, val_fraction=0.05, seed=0)
    n_train, n_val = (120_000, 15_000) if quick else (700_000, 60_000)
    return _lines(split.train, n_train), _lines(split.val, n_val), split.meta


def _clean(line: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", line).split())


def _lines(text: str, n_chars: int) -> list[str]:
    """The first lines of ``text`` (normalised, non-empty) holding about ``n_chars`` characters."""
    out, total = [], 0
    for raw in text.split("\n"):
        line = _clean(raw)
        if not line:
            continue
        out.append(line)
        total += len(line) + 1
        if total >= n_chars:
            break
    return out


def encode_lines(tok, lines: list[str]) -> list[int]:
    """Concatenated ids: each line's tokens then ``tok.eos_id`` (the newline)."""
    if tok.eos_id is None:
        raise DodaiError("the tokenizer has no end-of-text token to mark line ends")
    ids: list[int] = []
    for line in lines:
        ids.extend(tok.encode(line))
        ids.append(tok.eos_id)
    return ids


def decode_lines(tok, ids: list[int]) -> str:
    """Inverse of :func:`encode_lines`: the end-of-text id becomes a newline."""
    lines, cur = [], []
    for i in ids:
        if i == tok.eos_id:
            lines.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    return "\n".join(lines + [tok.decode(cur)])


def pieces(tok, text: str) -> list[str]:
    """The segmentation of ``text`` as strings; a BPE token that is not whole UTF-8 shows its bytes in hex."""
    if hasattr(tok, "encode_as_pieces"):
        return tok.encode_as_pieces(text)
    out = []
    for i in tok.encode(text):
        b = tok.token_bytes(i)
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append("<" + " ".join(f"{x:02X}" for x in b) + ">")
    return out


@torch.no_grad()
def heldout_loss(model, ids: torch.Tensor, block: int) -> float:
    """Mean next-token loss (nats) over every held-out token, in consecutive non-overlapping windows."""
    model.eval()
    n = (len(ids) - 1) // block * block
    x = ids[:n].view(-1, block)
    y = ids[1:n + 1].view(-1, block)
    total = 0.0
    for i in range(0, len(x), 64):
        _, loss = model(x[i:i + 64], y[i:i + 64])
        total += loss.item() * x[i:i + 64].numel()
    model.train()
    return total / n


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with one_thread():
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    from dodai.generate.sampling import generate
    from dodai.tokenizers.bpe import ByteLevelBPE
    from dodai.tokenizers.unigram import UnigramTokenizer

    rep = Report(out_dir, "R4.6 Japanese end to end: byte-level BPE vs Unigram")
    rep.text(__doc__.split("\n\n", 1)[1])
    train_lines, val_lines, meta = load_text(quick)
    train_text = "\n".join(train_lines)
    val_bytes = sum(len(s.encode("utf-8")) + 1 for s in val_lines)
    vocab = 1536 if quick else 4096
    rep.text(f"Corpus `{CORPUS}` ({meta['documents']} documents, split by document): "
             f"{len(train_lines)} train lines ({len(train_text.encode('utf-8')):,} bytes), "
             f"{len(val_lines)} held-out lines ({val_bytes:,} bytes). Vocabulary size {vocab} for both.")

    toks = {
        "byte-level BPE": ByteLevelBPE.train(train_text, vocab),
        "Unigram": UnigramTokenizer.train(train_text, vocab),
    }
    steps = 60 if quick else 1500
    cfg_kw = dict(block_size=64, n_layer=2, n_head=4, n_embd=64) if quick else \
        dict(block_size=128, n_layer=4, n_head=4, n_embd=128)
    rows, curves, samples, roundtrip = [], {}, {}, {}
    for name, tok in toks.items():
        train_ids = torch.tensor(encode_lines(tok, train_lines), dtype=torch.long)
        val_list = encode_lines(tok, val_lines)
        val_ids = torch.tensor(val_list, dtype=torch.long)
        roundtrip[name] = all(tok.decode(tok.encode(s)) == s for s in val_lines)
        cfg = GPTConfig(vocab_size=tok.vocab_size, pos_encoding="rope", **cfg_kw)
        torch.manual_seed(seed)
        init_loss = heldout_loss(type_model(cfg), val_ids, cfg.block_size)
        model, st = train_lm(cfg, train_ids, val_ids, steps=steps, bsz=12 if quick else 32, seed=seed)
        loss = heldout_loss(model, val_ids, cfg.block_size)
        n_eval = (len(val_ids) - 1) // cfg.block_size * cfg.block_size
        # bytes covered by the evaluated tokens, pro rata (all but < block_size tokens are evaluated)
        eval_bytes = val_bytes * n_eval / len(val_ids)
        bpb = bits_per_byte(loss, n_eval, round(eval_bytes))
        # the curve's losses are on random held-out windows; scale by tokens/byte of the held-out text
        scale = len(val_ids) / (val_bytes * math.log(2))
        curves[name] = [(s, v * scale) for s, v in st["curve"]]
        used = len(set(val_list) | set(train_ids.tolist()))
        rows.append({"tokenizer": name, "vocab_size": tok.vocab_size, "vocab_used": used,
                     "bytes_per_token": val_bytes / len(val_ids),
                     "tokens_per_char": len(val_ids) / sum(len(s) + 1 for s in val_lines),
                     "train_tokens": len(train_ids), "init_loss": init_loss, "val_loss_per_token": loss,
                     "val_bpb": bpb, "round_trip": roundtrip[name]})
        prompt = val_lines[0][:8]
        out = list(generate(model, tok.encode(prompt), 40 if quick else 120, temperature=0.8, top_k=40, seed=seed))
        samples[name] = prompt + decode_lines(tok, out)

    rep.heading("Tokenizers and models")
    rep.table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    rep.text("vocab_used: distinct ids seen in train+held-out. init_loss / val_loss_per_token: nats per token "
             "over all held-out tokens, before and after training. val_bpb: bits per UTF-8 byte (comparable).")
    best = min(rows, key=lambda r: r["val_bpb"])
    scores = ", ".join(f"{r['tokenizer']} {r['val_bpb']:.3f}" for r in rows)
    rep.text(f"Lower held-out bits per byte with this budget and seed {seed}: **{best['tokenizer']}** "
             f"({scores}). One seed, one size: "
             "treat the winner as an observation, not a law.")

    rep.heading("Segmentations (tokens joined with |)")
    seg_rows = []
    for s in [v for v in val_lines if 12 <= len(v) <= 60][:SENTENCES]:
        seg_rows.append({"text": s, **{n: "|".join(pieces(t, s)) for n, t in toks.items()}})
    rep.table(seg_rows)

    rep.heading("Samples (temperature 0.8, top-k 40)")
    for name, s in samples.items():
        rep.text(f"**{name}**")
        rep.code(s)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot([s for s, _ in c], [v for _, v in c], marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out bits per byte (random windows)")
    ax.set_title(f"Japanese GPT: BPE vs Unigram, vocab {vocab}")
    ax.legend()
    fig.tight_layout()
    png = out_dir / "val_bpb.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "held-out bits per byte during training")
    rep.results.update({"rows": rows, "curves": curves, "segmentations": seg_rows, "samples": samples,
                        "winner": best["tokenizer"], "vocab_size": vocab, "steps": steps, "seed": seed,
                        "quick": quick, "split": meta})
    rep.write()
    return rep.results


def type_model(cfg: GPTConfig):
    """A freshly initialised GPT (the untrained baseline for the held-out loss)."""
    from dodai.models.gpt import GPT

    return GPT(cfg)
