"""``dodai ppl``: perplexity of a model on held-out text for each weight format (fp32, bf16, int8).

The table says, for each format, the weight memory, the perplexity and its change against fp32, and
whether dodai offers the format (``dodai generate --format``): only formats within 1 % of fp32 on
the model family's real model are offered (dodai.quant.offered_formats(model_type); SmolLM2 asserted by
tests/test_quant.py, Gemma 3 by tests/test_gemma3_formats.py).
"""

from dodai.quant import FORMATS, MAX_PPL_INCREASE, offered_formats

HELP = "perplexity on held-out text for each weight format (fp32 / bf16 / int8) and which ones are offered"


def add_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="run folder, .gguf file or registry name (default smollm2-135m-instruct)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated weight formats to measure (default {','.join(FORMATS)})")
    p.add_argument("--tokens", type=int, default=512,
                   help="held-out tokens scored (python-docs validation split; default 512)")
    p.add_argument("--text", default=None,
                   help="score this UTF-8 text file instead of the built-in held-out text")
    p.add_argument("--window", type=int, default=None, help="tokens per scoring window (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def run(args) -> int:
    import json
    import sys

    import torch

    from dodai.errors import DodaiError
    from dodai.models import load_model
    from dodai.quant.perplexity import format_perplexities, heldout_ids

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise DodaiError(f"--formats: unknown format {bad[0] if bad else '(none)'}; known: {', '.join(FORMATS)}")
    if args.tokens < 2:
        raise DodaiError(f"--tokens must be >= 2, got {args.tokens}")
    if args.threads is not None:
        if args.threads < 1:
            raise DodaiError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    if args.text is not None:
        from dodai.io import read_user_text

        ids = tok.encode(read_user_text(args.text))[:args.tokens]
        if len(ids) < 2:
            raise DodaiError(f"{args.text}: fewer than 2 tokens to score")
        source = str(args.text)
    else:
        ids = heldout_ids(tok, args.tokens)
        source = "python-docs validation split"
    print(f"dodai ppl: {args.model}, {len(ids)} tokens of {source}, formats {', '.join(formats)} ...",
          file=sys.stderr)
    res = format_perplexities(model, ids, formats, args.window)
    offered = offered_formats(getattr(model.config, "model_type", None))
    for fmt, r in res.items():
        r["offered"] = fmt in offered
    if args.json:
        print(json.dumps({"model": str(args.model), "text": source, "formats": res}, indent=1))
        return 0
    print(f"{'format':<7} {'weights MiB':>11} {'perplexity':>10} {'vs fp32':>8}  offered")
    for fmt, r in res.items():
        vs = f"{100 * r['vs_fp32']:+.2f}%" if "vs_fp32" in r else "-"
        print(f"{fmt:<7} {r['weight_bytes'] / 2**20:>11.1f} {r['ppl']:>10.3f} {vs:>8}  "
              f"{'yes' if r['offered'] else 'no'}")
    over = [f for f, r in res.items() if r.get("vs_fp32", 0.0) > MAX_PPL_INCREASE]
    if over:
        print(f"dodai ppl: {', '.join(over)} above the {100 * MAX_PPL_INCREASE:.0f} % bound on this model/text",
              file=sys.stderr)
    return 0
