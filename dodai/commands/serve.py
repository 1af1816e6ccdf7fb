"""``dodai serve``: an OpenAI-compatible server (chat, completions, embeddings) with a web chat at ``/``.

Any OpenAI client works against it (``base_url="http://127.0.0.1:8000/v1"``); concurrent requests are decoded
together (continuous batching on a paged KV cache with shared prompt prefixes; :mod:`dodai.serve`). It binds
127.0.0.1 by default and refuses another address unless ``--api-key`` (or ``DODAI_API_KEY``) is set.
"""

HELP = "serve a model over an OpenAI-compatible HTTP API, with continuous batching and a web chat"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="a registry model name (smollm2-135m-instruct), a .gguf file or a "
                                                   "model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another address needs "
                                                      "--api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 and /metrics "
                                                   "(default: $DODAI_API_KEY, else none)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond that get 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask (default 1024)")
    p.add_argument("--context", type=int, default=2048,
                   help="tokens per sequence, prompt + reply (default 2048, capped by the model's window)")
    p.add_argument("--kv-blocks", type=int, default=None,
                   help="KV cache blocks of 16 positions in the pool (default: room for --max-batch full contexts)")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="prompt tokens prefilled per scheduler step, so long prompts do not stall decoding (256)")
    p.add_argument("--embedding-model", default="all-minilm-l6-v2",
                   help="model for /v1/embeddings (default all-minilm-l6-v2; 'none' to disable)")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow browser pages from this origin to call the API (repeatable; default: no CORS)")
    from dodai.quant import OFFERED_FORMATS

    p.add_argument("--format", choices=OFFERED_FORMATS, default="fp32",
                   help="weight format; only formats within 1%% of fp32 perplexity are offered")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args) -> int:
    import os
    import sys
    from pathlib import Path

    from dodai.errors import DodaiError
    from dodai.serve.server import check_bind, make_served, serve_forever

    key = args.api_key or os.environ.get("DODAI_API_KEY") or None
    check_bind(args.host, key)
    if not 0 < args.port < 65536:
        raise DodaiError(f"--port must be in 1..65535, got {args.port}")
    if args.threads is not None:
        if args.threads < 1:
            raise DodaiError(f"--threads must be positive, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    from dodai.models import load_model

    model, tok = load_model(args.model)
    if args.format != "fp32":
        from dodai.quant.int8 import quantize_model

        quantize_model(model, args.format)
    model_id = args.model if not Path(args.model).exists() else Path(args.model).stem
    embed = None if args.embedding_model.lower() == "none" else args.embedding_model
    served = make_served(model, tok, model_id, max_batch=args.max_batch, num_blocks=args.kv_blocks,
                         prefill_chunk=args.prefill_chunk, context=args.context, api_key=key,
                         max_tokens_cap=args.max_tokens, max_queue=args.max_queue, embed_model=embed,
                         cors_origins=args.cors_origin)
    print(f"dodai serve: {model_id} on http://{args.host}:{args.port}  (web chat at /, OpenAI API at /v1; "
          f"{'key required' if key else 'no key'}; Ctrl-C stops)", file=sys.stderr)
    serve_forever(served, args.host, args.port)
    return 0
