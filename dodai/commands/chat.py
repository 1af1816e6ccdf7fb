"""``dodai chat``: a multi-turn terminal chat with a model, in the model's own chat template.

The conversation lives in :class:`dodai.generate.session.ChatSession` (template rendering, stop ids, prefix
reuse of the KV cache across turns, dropping the oldest turns when the context is full); this module only
parses arguments and reads lines.

Commands (a line that starts with ``/``): ``/reset`` forgets the conversation, ``/system TEXT``
sets the system message (and resets), ``/exit`` (or end of input) quits. Lines come from stdin, so
``printf 'hi\\n/reset\\nhello\\n' | dodai chat --model smollm2-135m-instruct --temperature 0`` works;
the ``> `` prompt is shown on a terminal only.
"""

from __future__ import annotations

HELP = "chat with a model in its own chat template (streamed; /reset, /system TEXT, /exit)"

def add_arguments(p) -> None:
    p.add_argument("--model", required=True,
                   help="a registry model name (smollm2-135m-instruct), a .gguf file or a model folder")
    p.add_argument("--system", default=None, help="system message (default: the template's own, if any)")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature; 0 = greedy (default 0.2)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed and input -> same replies)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--context", type=int, default=2048,
                   help="tokens of conversation kept (KV cache size; capped by the model's window; default 2048)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="weights and compute dtype (default float32)")
    p.add_argument("--memory", default=None, metavar="DIR",
                   help="long-term memory folder (created if absent): relevant memories join the prompt, personal "
                        "statements are stored, overflowing turns are summarised (see `dodai memory`)")
    from dodai.quant import OFFERED_FORMATS

    p.add_argument("--format", choices=OFFERED_FORMATS, default=None,
                   help="weight format (overrides --dtype); only formats within 1%% of fp32 perplexity are offered")


def run(args) -> int:
    import sys

    import torch

    from dodai.errors import DodaiError
    from dodai.models import load_model

    dtype = torch.bfloat16 if args.dtype == "bfloat16" and args.format is None else torch.float32
    model, tok = load_model(args.model, dtype=dtype)
    if args.format is not None:  # converted from the fp32 weights, never from already rounded ones
        from dodai.quant.int8 import quantize_model

        quantize_model(model, args.format)
    if getattr(args, "memory", None):  # R7.4: buffer + rolling summary + long-term vector memory
        from dodai.memory.agent import MemoryChat

        session = MemoryChat.from_args(model, tok, args)
    else:
        from dodai.generate.session import ChatSession

        session = ChatSession(model, tok, system=args.system, context=args.context, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, max_new_tokens=args.max_new_tokens)
    tty = sys.stdin.isatty()
    err, out = sys.stderr, sys.stdout
    if tty:
        print(f"dodai chat: {args.model} ({model.config.n_layer} layers, context {session.context}). "
              f"/reset, /system TEXT, /exit", file=err)

    def write(piece: str) -> None:
        out.write(piece)
        out.flush()

    while True:
        if tty:
            err.write("> ")
            err.flush()
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        line = line.rstrip("\r\n")
        cmd = line.strip()
        if not cmd:
            continue
        if cmd.startswith("/"):
            name, _, rest = cmd.partition(" ")
            if name in ("/exit", "/quit"):
                break
            if name == "/reset":
                session.reset()
                print("dodai: conversation cleared", file=err)
            elif name == "/system":
                session.reset(rest.strip() or None, keep_system=False)
                print("dodai: system message " + ("set" if rest.strip() else "cleared") + "; conversation cleared",
                      file=err)
            else:
                print(f"dodai: unknown command {name} (/reset, /system TEXT, /exit)", file=err)
            continue
        dropped = session.dropped_turns
        try:
            session.reply(line, on_text=write)
        except DodaiError as e:
            print(f"\ndodai: {e}", file=err)
            continue
        write("\n")
        if session.dropped_turns > dropped:
            print(f"dodai: dropped the oldest {session.dropped_turns - dropped} exchange(s) to fit the context",
                  file=err)
    return 0
