"""``dodai rag index`` / ``dodai rag ask``: build a retrieval index, then answer questions from it with citations.

``dodai rag index --corpus python-docs --out DIR`` chunks a corpus, builds BM25 and (unless
``--no-dense``) MiniLM embeddings, and saves the index folder (dodai/rag/index.py). ``--corpus`` is a
registered corpus name, a folder (every ``.txt``/``.md`` file below it is one document, titled by
its relative path), a ``.jsonl`` file (one ``{"text": ..., "title": ...}`` per line) or a text file
(one document).

``dodai rag ask --index DIR "question"`` retrieves the top ``--k`` chunks and asks the chat model to
answer from them, citing [n]; the answer goes to stdout, then the numbered sources. With
``--retrieve-only`` it prints the ranked chunks and loads no chat model.
"""

from __future__ import annotations

HELP = ("retrieval-augmented answers: `rag index` builds an index, `rag ask` answers with a citation, "
        "`rag eval` scores a QA set")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ix = sub.add_parser("index", help="chunk a corpus and build a BM25 + dense index folder")
    ix.add_argument("--corpus", required=True,
                    help="corpus name (python-docs), a folder of .txt/.md files, a .jsonl file or a text file")
    ix.add_argument("--out", required=True, help="index folder to write")
    ix.add_argument("--chunk-size", type=int, default=800, help="chunk size in characters (default 800)")
    ix.add_argument("--chunk-overlap", type=int, default=100, help="overlap in characters (default 100)")
    ix.add_argument("--encoder", default="all-minilm-l6-v2",
                    help="sentence encoder: registry name or folder (default all-minilm-l6-v2)")
    ix.add_argument("--no-dense", action="store_true", help="BM25 only: no embeddings (fast, no model)")
    ix.add_argument("--batch-size", type=int, default=32, help="texts per embedding batch (default 32)")
    ix.add_argument("--quiet", action="store_true", help="no progress bar")
    ix.add_argument("--description", default=None,
                    help="what the collection is (e.g. \"Wikipedia articles\"); told to the model when answering")

    ask = sub.add_parser("ask", help="answer a question from an index, citing the sources [n]")
    ask.add_argument("question", help="the question")
    ask.add_argument("--index", required=True, help="index folder built by `dodai rag index`")
    ask.add_argument("--k", type=int, default=None,
                     help="chunks shown to the model (default 2 for --mode extract, 4 for generate)")
    ask.add_argument("--mode", choices=["extract", "generate"], default="extract",
                     help="extract (default): a short answer copied from the sources under constrained decoding; "
                          "generate: a free answer that cites its sources as [n]")
    ask.add_argument("--system", default=None, help="system instruction (default: a corpus-neutral one)")
    ask.add_argument("--method", choices=["bm25", "dense", "hybrid", "weighted"], default="hybrid",
                     help="retrieval: bm25, dense, hybrid (reciprocal rank fusion, default) or weighted")
    ask.add_argument("--min-score", type=float, default=0.25,
                     help="answer \"I don't know\" when the best chunk's cosine is below this (default 0.25)")
    ask.add_argument("--model", default="smollm2-135m-instruct",
                     help="chat model: registry name, .gguf file or model folder (default smollm2-135m-instruct)")
    ask.add_argument("--max-new-tokens", type=int, default=None,
                     help="longest answer in tokens (default 16 for extract, 128 for generate)")
    ask.add_argument("--retrieve-only", action="store_true", help="print the ranked chunks; no chat model")

    ev = sub.add_parser("eval", help="score extractive answers on a QA set: hit@k, exact match, F1, abstention")
    ev.add_argument("--qa", required=True,
                    help='JSON Lines: {"question": ..., "answers": [...], "gold": doc index or title (optional)}')
    ev.add_argument("--index", required=True, help="index folder built by `dodai rag index`")
    ev.add_argument("--k", type=int, default=2, help="chunks shown to the model (default 2)")
    ev.add_argument("--method", choices=["bm25", "dense", "hybrid", "weighted", "none"], default="hybrid",
                    help="retrieval (default hybrid); none: the model alone, no sources (the floor)")
    ev.add_argument("--min-score", type=float, default=0.25,
                    help="abstain when the best chunk's cosine is below this (default 0.25)")
    ev.add_argument("--model", default="smollm2-135m-instruct", help="chat model (default smollm2-135m-instruct)")
    ev.add_argument("--system", default=None, help="system instruction (default: a corpus-neutral one)")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    ev.add_argument("--out", default=None, help="write every question's answer and scores to this JSON file")


def _load_docs(spec: str) -> tuple[list[str], list[str]]:
    """(documents, titles) from a corpus name, a folder, a .jsonl file or a text file."""
    import json
    from pathlib import Path

    from dodai.data.corpora import CORPORA, corpus_documents
    from dodai.errors import DodaiError
    from dodai.io import read_user_text, read_user_texts, user_files_in

    if spec in CORPORA:
        docs = corpus_documents(spec)
        return docs, [f"{spec} #{i}" for i in range(len(docs))]
    p = Path(spec).expanduser()
    if p.is_dir():
        files = sorted(user_files_in(p, (".txt", ".md")))
        if not files:
            raise DodaiError(f"{p}: no .txt or .md files")
        return read_user_texts(files), [f.relative_to(p).as_posix() for f in files]
    if not p.exists():
        raise DodaiError(f"--corpus {spec!r} is neither a corpus name ({', '.join(CORPORA)}) nor an existing path")
    text = read_user_text(p)  # a regular file only: a FIFO or a device is a one-line error
    if p.suffix.lower() != ".jsonl":
        return [text], [p.name]
    docs, titles = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            raise DodaiError(f"{p}:{n}: not valid JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DodaiError(f"{p}:{n}: each line must be an object with a \"text\" string")
        docs.append(obj["text"])
        titles.append(str(obj.get("title", f"{p.name}:{n}")))
    return docs, titles


def run(args) -> int:
    import sys

    from dodai.errors import DodaiError

    if args.action == "index":
        if args.batch_size < 1:
            raise DodaiError(f"--batch-size must be positive, got {args.batch_size}")
        from dodai.rag.index import RagIndex

        docs, titles = _load_docs(args.corpus)
        index = RagIndex.build(docs, titles, args.chunk_size, args.chunk_overlap, encoder_spec=args.encoder,
                               batch_size=args.batch_size, progress=not args.quiet, dense=not args.no_dense)
        index.description = (args.description or "").strip() or None
        out = index.save(args.out)
        print(f"indexed {len(docs)} documents as {len(index.chunks)} chunks "
              f"({'BM25 + dense' if index.dense is not None else 'BM25 only'}) -> {out}", file=sys.stderr)
        return 0

    if args.action == "eval":
        return _eval(args)
    if args.k is None:
        args.k = 2 if args.mode == "extract" else 4
    if args.max_new_tokens is None:
        args.max_new_tokens = 16 if args.mode == "extract" else 128
    if args.k < 1:
        raise DodaiError(f"--k must be positive, got {args.k}")
    if args.max_new_tokens < 1:
        raise DodaiError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if not args.question.strip():
        raise DodaiError("the question is empty")
    from dodai.rag.index import RagIndex

    index = RagIndex.load(args.index)
    if args.retrieve_only:
        for n, h in enumerate(index.search(args.question, k=args.k, method=args.method), start=1):
            cos = "" if h.dense_score is None else f" cos {h.dense_score:.3f}"
            text = " ".join(h.chunk.text.split())
            print(f"[{n}] {index.title(h.chunk.source)} (chars {h.chunk.start}-{h.chunk.end}, "
                  f"score {h.score:.4f}{cos})\n    {text[:300]}")
        return 0
    from dodai.models import load_model
    from dodai.rag.answer import answer

    model, tok = load_model(args.model)
    a = answer(index, model, tok, args.question, k=args.k, method=args.method, min_score=args.min_score,
               max_new_tokens=args.max_new_tokens, mode=args.mode, system=args.system)
    print(a.text)
    if not a.abstained or a.citations:
        print("\nSources:")
        for n, h in enumerate(a.sources, start=1):
            mark = "*" if n in a.citations else " "
            print(f"{mark}[{n}] {index.title(h.chunk.source)} (chars {h.chunk.start}-{h.chunk.end})")
    if a.invalid_citations:
        print(f"warning: the answer cites sources that do not exist: {a.invalid_citations}", file=sys.stderr)
    elif not a.abstained and not a.citations:
        print("warning: the answer cites no source", file=sys.stderr)
    return 0


def _eval(args) -> int:
    import sys

    from dodai.errors import DodaiError
    from dodai.rag.evalset import load_qa

    if args.k < 1:
        raise DodaiError(f"--k must be positive, got {args.k}")
    if args.limit is not None and args.limit < 1:
        raise DodaiError(f"--limit must be positive, got {args.limit}")
    items = load_qa(args.qa)[:args.limit]
    from dodai.rag.index import RagIndex

    index = RagIndex.load(args.index)
    if args.method not in ("bm25", "none") and index.dense is None:
        raise DodaiError(f"--method {args.method} needs an index with dense embeddings (this one is BM25 only)")
    from dodai.models import load_model
    from dodai.rag.answer import Reader
    from dodai.rag.qa import run_qa, summarise

    model, tok = load_model(args.model)
    model.eval()

    def progress(n, total, row):
        print(f"\r{n}/{total}", end="", file=sys.stderr, flush=True)

    rows = run_qa(index, Reader(model, tok), items, k=args.k, method=args.method, min_score=args.min_score,
                  system=args.system, progress=progress)
    print(file=sys.stderr)
    s = summarise(rows)
    pct = "n/a"
    print(f"questions        {s['n']}")
    print(f"hit@{args.k:<13}{pct if s['hit@k'] is None else format(100 * s['hit@k'], '.1f')}")
    print(f"exact match      {s['exact_match']:.1f}")
    print(f"F1               {s['f1']:.1f}")
    print(f"gold in cited    {pct if s['gold_in_cited'] is None else format(100 * s['gold_in_cited'], '.1f')}")
    print(f"abstention       {100 * s['abstention']:.1f}")
    if args.out:
        from dodai.io import atomic_write_json

        atomic_write_json(args.out, {"summary": s, "rows": rows})
        print(f"answers written to {args.out}", file=sys.stderr)
    return 0
