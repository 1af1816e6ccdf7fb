"""``dodai generate``: stream a model's continuation of a prompt to stdout."""

HELP = "generate text from a model (greedy or sampled, streamed to stdout)"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True,
                   help="a run folder (config.json + model.safetensors + tokenizer.json), a .gguf file, "
                        "or a registry model name")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100, help="at most this many new tokens (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass >= p")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed -> same text)")


def run(args) -> int:
    import sys
    import time

    from dodai.errors import DodaiError
    from dodai.generate.sampling import generate
    from dodai.generate.stream import StreamDecoder
    from dodai.models import load_model

    model, tok = load_model(args.model)
    ids = tok.encode(args.prompt)
    if not ids:
        raise DodaiError("the prompt encodes to no tokens")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"dodai: {args.model}: {n_params:,} parameters; prompt {len(ids)} tokens", file=sys.stderr)
    eos = getattr(tok, "eos_id", None)
    stream = generate(model, ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p, seed=args.seed, eos_id=eos)
    dec = StreamDecoder(tok)
    n = 0
    t0 = time.perf_counter()
    out = sys.stdout
    for tid in stream:
        if tid == eos:
            break  # EOS ends the text; it is not part of it
        n += 1
        piece = dec.push(tid)
        if piece:
            out.write(piece)
            out.flush()
    out.write(dec.flush() + "\n")
    out.flush()
    dt = time.perf_counter() - t0
    print(f"dodai: {n} tokens in {dt:.2f} s ({n / dt if dt > 0 else 0.0:.1f} tok/s)", file=sys.stderr)
    return 0
