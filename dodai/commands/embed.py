"""`dodai embed --model all-minilm-l6-v2 TEXT...`: sentence embeddings and their cosine similarities."""

from __future__ import annotations

HELP = "embed texts with a BERT sentence encoder; print cosine similarities (or the vectors with --json)"


def add_arguments(p) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument("--model", default="all-minilm-l6-v2",
                   help="registry name or sentence-transformers folder (default all-minilm-l6-v2)")
    p.add_argument("--file", default=None, help="read one text per line from this file (empty lines skipped)")
    p.add_argument("--json", action="store_true", help="print a JSON list with one embedding vector per text")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")


def _label(text: str, width: int = 28) -> str:
    t = " ".join(text.split())
    return t if len(t) <= width else t[:width - 1] + "…"


def run(args) -> int:
    import json
    import sys

    from dodai.errors import DodaiError
    from dodai.io import read_user_text

    texts = list(args.texts)
    if args.file:
        texts += [ln for ln in read_user_text(args.file).splitlines() if ln.strip()]
    if not texts:
        raise DodaiError("no texts to embed: give TEXT arguments or --file PATH")
    if args.batch_size < 1:
        raise DodaiError(f"--batch-size must be positive, got {args.batch_size}")

    from dodai.models.bert import load_sentence_encoder

    enc = load_sentence_encoder(args.model)
    emb = enc.encode(texts, batch_size=args.batch_size)  # (N, C)
    if args.json:
        json.dump(emb.tolist(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    import torch.nn.functional as F

    unit = F.normalize(emb, dim=-1)  # cosine even if the model does not normalise
    sim = (unit @ unit.T).tolist()
    labels = [f"[{i}] {_label(t)}" for i, t in enumerate(texts)]
    w = max(len(s) for s in labels)
    print(" " * w + "  " + " ".join(f"{f'[{j}]':>7}" for j in range(len(texts))))
    for i, row in enumerate(sim):
        print(f"{labels[i]:<{w}}  " + " ".join(f"{v:7.4f}" for v in row))
    return 0
