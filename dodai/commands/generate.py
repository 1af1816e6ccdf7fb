"""``dodai generate``: stream a model's continuation of a prompt to stdout.

Several prompts (repeated ``--prompt`` and/or ``--prompts-file``, one per line) are generated together as
left-padded batches of at most ``--batch-size`` rows (:func:`dodai.generate.batch.generate_batch`); each
completion is printed after a ``--- prompt i`` header, in the order given. Row r of the batch is seeded
with ``--seed + r``.
"""

HELP = "generate text from a model (greedy or sampled, streamed to stdout)"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True,
                   help="a run folder (config.json + model.safetensors + tokenizer.json), a .gguf file, "
                        "or a registry model name")
    p.add_argument("--prompt", action="append", default=[],
                   help="the text to continue (repeat the flag for several prompts, generated as a batch)")
    p.add_argument("--prompts-file", default=None,
                   help="a UTF-8 text file with one prompt per line (blank lines skipped), generated as a batch")
    p.add_argument("--batch-size", type=int, default=8,
                   help="at most this many prompts decoded together (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="at most this many new tokens (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass >= p")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed -> same text)")
    p.add_argument("--min-p", type=float, default=None, help="keep tokens with prob >= min-p * top prob")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="CTRL repetition penalty on tokens already in the text (e.g. 1.2)")
    p.add_argument("--presence-penalty", type=float, default=0.0, help="subtract this from generated tokens' logits")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="subtract this times the count of each generated token")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size")
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
    p.add_argument("--num-samples", type=int, default=1, help="print this many samples of the continuation")
    p.add_argument("--logprobs", type=int, default=None,
                   help="also print each token's log-prob and its N most likely alternatives")
    from dodai.quant import OFFERED_FORMATS

    p.add_argument("--format", choices=OFFERED_FORMATS, default="fp32",
                   help="weight format; only formats within 1%% of fp32 perplexity are offered (see dodai ppl)")


def run(args) -> int:
    import sys
    import time

    from dodai.errors import DodaiError
    from dodai.generate.sampling import generate
    from dodai.generate.session import text_prompt_ids
    from dodai.generate.stream import StreamDecoder
    from dodai.models import load_model

    prompts = list(args.prompt)
    if args.prompts_file is not None:
        from dodai.io import read_user_text

        prompts += [line for line in read_user_text(args.prompts_file).splitlines() if line.strip()]
    if not prompts:
        raise DodaiError("give a prompt: --prompt TEXT (repeatable) or --prompts-file FILE")
    if args.batch_size < 1:
        raise DodaiError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, tok = load_model(args.model)
    if args.format != "fp32":
        from dodai.quant.int8 import quantize_model

        quantize_model(model, args.format)
    if len(prompts) > 1:
        return _run_batch(args, model, tok, prompts)
    ids = text_prompt_ids(tok, prompts[0])
    if not ids:
        raise DodaiError("the prompt encodes to no tokens")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"dodai: {args.model}: {n_params:,} parameters; prompt {len(ids)} tokens", file=sys.stderr)
    eos = getattr(tok, "eos_id", None)
    if (args.min_p is not None or args.repetition_penalty is not None or args.presence_penalty
            or args.frequency_penalty or args.no_repeat_ngram_size is not None or args.stop
            or args.num_samples != 1 or args.logprobs is not None):
        return _run_engine(args, model, tok, ids, eos)
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


def _pipeline(args):
    from dodai.generate.processors import LogitsPipeline

    return LogitsPipeline(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                          frequency_penalty=args.frequency_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)


def _print_logprobs(out, tok, logprobs) -> None:
    import json

    for lp in logprobs:
        row = {"token": tok.decode([lp.token]), "id": lp.token, "logprob": round(lp.logprob, 4),
               "top": [[tok.decode([t]), t, round(v, 4)] for t, v in lp.top]}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _run_batch(args, model, tok, prompts: list[str]) -> int:
    """Several prompts: left-padded batches; each prompt's --num-samples rows, printed in order."""
    import sys
    import time

    from dodai.errors import DodaiError
    from dodai.generate.batch import generate_batch
    from dodai.generate.session import text_prompt_ids

    if args.num_samples < 1:
        raise DodaiError(f"--num-samples must be >= 1, got {args.num_samples}")
    ids = [text_prompt_ids(tok, p) for p in prompts]
    for i, x in enumerate(ids):
        if not x:
            raise DodaiError(f"prompt {i + 1} encodes to no tokens")
    rows = [x for x in ids for _ in range(args.num_samples)]
    eos = getattr(tok, "eos_id", None)
    print(f"dodai: {args.model}: {len(prompts)} prompts ({min(map(len, ids))}-{max(map(len, ids))} tokens) "
          f"in batches of {args.batch_size}", file=sys.stderr)
    t0 = time.perf_counter()
    comps = generate_batch(model, rows, args.max_new_tokens, _pipeline(args), seed=args.seed, eos_id=eos,
                           stop_strings=args.stop, tokenizer=tok, logprobs=args.logprobs,
                           batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    out = sys.stdout
    for r, c in enumerate(comps):
        i, j = divmod(r, args.num_samples)
        sample = f", sample {j + 1}" if args.num_samples > 1 else ""
        out.write(f"--- prompt {i + 1}{sample} ({c.finish_reason})\n{c.text}\n")
        if c.logprobs is not None:
            _print_logprobs(out, tok, c.logprobs)
    out.flush()
    n = sum(len(c.ids) for c in comps)
    print(f"dodai: {n} tokens in {dt:.2f} s ({n / dt if dt > 0 else 0.0:.1f} tok/s, all rows)", file=sys.stderr)
    return 0


def _run_engine(args, model, tok, ids, eos) -> int:
    """The full engine: penalties, stop strings, n samples, log-probs (streamed when there is one sample)."""
    import sys

    from dodai.generate.engine import StopStringFilter, complete, stream_steps
    from dodai.generate.stream import StreamDecoder

    pipe = _pipeline(args)
    out = sys.stdout
    if args.num_samples == 1 and args.logprobs is None:
        steps = stream_steps(model, ids, args.max_new_tokens, pipe, seed=args.seed,
                             stop_tokens=[eos] if eos is not None else [])
        dec, stopper = StreamDecoder(tok), StopStringFilter(args.stop)
        for st in steps:
            tid = st.tokens[0]
            if tid is None or tid == eos:
                break
            text, stopped = stopper.push(dec.push(tid))
            out.write(text)
            out.flush()
            if stopped:
                break
        if not stopper.stopped:
            out.write(stopper.push(dec.flush())[0])
        out.write(stopper.flush() + "\n")
        out.flush()
        return 0
    comps = complete(model, ids, args.max_new_tokens, pipe, seed=args.seed, num_samples=args.num_samples,
                     eos_id=eos, stop_strings=args.stop, tokenizer=tok, logprobs=args.logprobs)
    for i, c in enumerate(comps):
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1} ({c.finish_reason})\n")
        out.write(c.text + "\n")
        if c.logprobs is not None:
            _print_logprobs(out, tok, c.logprobs)
    out.flush()
    return 0
