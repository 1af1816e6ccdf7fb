"""`dodai tokenizer train | encode | decode`: train a tokenizer, or use one on text."""

from __future__ import annotations

HELP = "train a tokenizer (BPE, char, Unigram, WordPiece), encode/decode text with one, or compare them on a text"


def _train_bpe(text: str, args):
    from dodai.errors import DodaiError
    from dodai.tokenizers.bpe import ByteLevelBPE

    if args.vocab_size is None:
        raise DodaiError("--algo bpe needs --vocab-size N (e.g. 8192)")
    specials = args.special if args.special is not None else ["<|endoftext|>"]
    return ByteLevelBPE.train(text, args.vocab_size, special_tokens=specials, pattern=args.pattern,
                              min_frequency=args.min_frequency, progress=not args.quiet)


def _train_char(text: str, args):
    from dodai.errors import DodaiError
    from dodai.tokenizers.char import CharTokenizer

    if args.special:
        raise DodaiError("--algo char has no special tokens; drop --special")
    tok = CharTokenizer.train(text)
    if args.vocab_size is not None and tok.vocab_size > args.vocab_size:
        raise DodaiError(f"the data has {tok.vocab_size} distinct characters, more than --vocab-size "
                         f"{args.vocab_size}")
    return tok


def _train_unigram(text: str, args):
    from dodai.errors import DodaiError
    from dodai.tokenizers.unigram import UnigramTokenizer

    if args.vocab_size is None:
        raise DodaiError("--algo unigram needs --vocab-size N (e.g. 8000)")
    if args.special:
        raise DodaiError("--algo unigram has fixed special tokens <unk> <s> </s>; drop --special")
    return UnigramTokenizer.train(text, args.vocab_size, progress=not args.quiet)


def _train_wordpiece(text: str, args):
    from dodai.errors import DodaiError
    from dodai.tokenizers.wordpiece_trainer import SPECIALS, train

    if args.vocab_size is None:
        raise DodaiError("--algo wordpiece needs --vocab-size N (e.g. 30000)")
    specials = list(SPECIALS) + [s for s in (args.special or []) if s not in SPECIALS]
    return train(text, args.vocab_size, special_tokens=specials, progress=not args.quiet)


# --algo name -> trainer(text, args) -> tokenizer with .save(); new algorithms add one line here.
TRAINERS = {"bpe": _train_bpe, "char": _train_char, "unigram": _train_unigram, "wordpiece": _train_wordpiece}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a tokenizer on text files and write DIR/tokenizer.json")
    t.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 training text file(s)")
    t.add_argument("--vocab-size", type=int, default=None, help="vocabulary size incl. 256 bytes and specials")
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (gets tokenizer.json)")
    t.add_argument("--algo", choices=sorted(TRAINERS), default="bpe", help="tokenizer algorithm (default bpe)")
    t.add_argument("--pattern", default="gpt4",
                   help="pre-tokenization regex for bpe: gpt4 (default), gpt2, or a regex")
    t.add_argument("--special", nargs="*", default=None, metavar="TOKEN",
                   help="special tokens (default <|endoftext|> for bpe; give --special alone for none)")
    t.add_argument("--min-frequency", type=int, default=2, help="stop merging below this pair count (default 2)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("encode", help="print the ids of TEXT as a JSON list")
    e.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="tokenizer.json, a folder holding one, a .gguf file, or a registry model name")
    e.add_argument("text", metavar="TEXT", help="text to encode ('-' reads stdin)")
    d = sub.add_parser("decode", help="print the text of a JSON list of ids")
    d.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="tokenizer.json, a folder holding one, a .gguf file, or a registry model name")
    d.add_argument("ids", metavar="IDS_JSON", help="a JSON list of token ids, e.g. '[15496, 995]' ('-' reads stdin)")
    c = sub.add_parser("compare", help="train dodai's BPE, Unigram, WordPiece on 90%% of a text; print a markdown "
                                       "table for the rest (benchmarks/tokenizer_compare.py adds HF and sentencepiece)")
    c.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file")
    c.add_argument("--vocab-size", type=int, default=2000, help="vocabulary size for every tokenizer (default 2000)")
    c.add_argument("--max-bytes", type=int, default=None, metavar="N", help="use only the first N bytes of the file")
    c.add_argument("--no-reference", action="store_true",
                   help="accepted for old scripts; dodai's table has only dodai's tokenizers (reference rows: "
                        "benchmarks/tokenizer_compare.py)")


def _arg_text(value: str) -> str:
    import sys

    return sys.stdin.read() if value == "-" else value


def run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from dodai.errors import DodaiError

    if args.action == "train":
        from dodai.io import read_user_texts

        if args.vocab_size is not None and args.vocab_size <= 0:
            raise DodaiError(f"--vocab-size must be positive, got {args.vocab_size}")
        text = "\n".join(read_user_texts(args.data))  # regular files only, 1 GiB in all
        t0 = time.perf_counter()
        tok = TRAINERS[args.algo](text, args)
        dt = time.perf_counter() - t0
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise DodaiError(f"--out {out} exists and is not a folder")
        path = tok.save(out / "tokenizer.json")
        n_tokens = len(tok.encode(text))
        n_bytes = len(text.encode("utf-8"))
        print(f"dodai: {args.algo} tokenizer, vocab {tok.vocab_size}, {n_bytes / max(n_tokens, 1):.3f} bytes/token "
              f"on the data ({n_tokens:,} tokens), trained in {dt:.2f} s -> {path}", file=sys.stderr)
        return 0

    if args.action == "compare":
        from dodai.io import read_user_text
        from dodai.tokenizers.compare import compare, markdown_table

        if args.max_bytes is not None and args.max_bytes <= 0:
            raise DodaiError(f"--max-bytes must be positive, got {args.max_bytes}")
        text = read_user_text(args.data)
        if args.max_bytes is not None:
            text = text.encode("utf-8")[:args.max_bytes].decode("utf-8", errors="ignore")
        rows = compare(text, args.vocab_size,
                       log=lambda m: print(f"dodai: {m}", file=sys.stderr))
        print(markdown_table(rows))
        return 0

    from dodai.tokenizers import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    if args.action == "encode":
        print(json.dumps(tok.encode(_arg_text(args.text))))
        return 0
    try:
        ids = json.loads(_arg_text(args.ids))
    except json.JSONDecodeError as e:
        raise DodaiError(f"IDS_JSON is not valid JSON ({e.msg}); expected a list like [1, 2, 3]") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise DodaiError("IDS_JSON must be a JSON list of integers, e.g. [1, 2, 3]")
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0
