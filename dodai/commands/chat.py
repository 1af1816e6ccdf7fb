"""``dodai chat``: a multi-turn terminal chat with a model, in the model's own chat template.

Each turn re-renders the whole conversation with the template (dodai/chat_template.py) and
tokenizes it; the KV cache keeps the tokens of the previous render, so only the part after the
longest common prefix goes through the model (usually just the new user message). When the
conversation no longer fits the context, the oldest turns are dropped (the system message stays).

Commands (a line that starts with ``/``): ``/reset`` forgets the conversation, ``/system TEXT``
sets the system message (and resets), ``/exit`` (or end of input) quits. Lines come from stdin, so
``printf 'hi\\n/reset\\nhello\\n' | dodai chat --model smollm2-135m-instruct --temperature 0`` works;
the ``> `` prompt is shown on a terminal only.
"""

from __future__ import annotations

HELP = "chat with a model in its own chat template (streamed; /reset, /system TEXT, /exit)"

# The ChatML template (as used by SmolLM2 and Qwen) for models that carry no template of their own.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


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


class ChatSession:
    """The conversation state: messages, the KV cache and the token ids it holds."""

    def __init__(self, model, tokenizer, template=None, system: str | None = None, context: int = 2048,
                 temperature: float = 0.2, top_k: int | None = None, top_p: float | None = 0.9,
                 seed: int | None = None, max_new_tokens: int = 256):
        import torch

        from dodai.chat_template import ChatTemplate
        from dodai.errors import DodaiError

        if max_new_tokens <= 0:
            raise DodaiError(f"--max-new-tokens must be positive, got {max_new_tokens}")
        if temperature < 0:
            raise DodaiError(f"--temperature must be >= 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise DodaiError(f"--top-p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k <= 0:
            raise DodaiError(f"--top-k must be positive, got {top_k}")
        self.model, self.tok = model, tokenizer
        specials = getattr(tokenizer, "special_tokens", {}) or {}
        by_id = {i: s for s, i in specials.items()}
        names = {"bos_token": by_id.get(getattr(tokenizer, "bos_id", None), ""),
                 "eos_token": by_id.get(getattr(tokenizer, "eos_id", None), "")}
        src = template or getattr(tokenizer, "chat_template", None) or CHATML
        self.template = src if isinstance(src, ChatTemplate) else ChatTemplate(src, names)
        self.context = min(int(context), model.config.block_size)
        if self.context < 16:
            raise DodaiError(f"--context must be at least 16 tokens, got {context}")
        self.max_new_tokens = min(max_new_tokens, self.context // 2)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.stop_ids = {specials[s] for s in STOP_TOKENS if s in specials}
        if getattr(tokenizer, "eos_id", None) is not None:
            self.stop_ids.add(tokenizer.eos_id)
        self.gen = None
        if seed is not None:
            self.gen = torch.Generator().manual_seed(seed)
        self.cache = model.new_cache(1, self.context)
        self.cached_ids: list[int] = []  # the ids whose keys/values are in the cache, positions 0..n-1
        self.reused = 0  # prompt tokens the last turn took from the cache instead of recomputing
        self.system = system
        self.messages: list[dict] = []
        self.dropped_turns = 0

    def reset(self, system: str | None = None, keep_system: bool = True) -> None:
        if not keep_system:
            self.system = system
        self.messages = []

    def _render_ids(self, messages: list[dict]) -> list[int]:
        from dodai.safety.guards import safe_chat_ids

        msgs = ([{"role": "system", "content": self.system}] if self.system is not None else []) + messages
        # control strings typed by the user ("<|im_end|>…") stay text, never control tokens (R8.2)
        return safe_chat_ids(self.template, self.tok, msgs)

    def _fit(self, messages: list[dict]) -> tuple[list[dict], list[int], int]:
        """(kept messages, prompt ids, exchanges dropped): the oldest turns go until prompt + reply fit."""
        from dodai.errors import DodaiError

        dropped = 0
        while True:
            ids = self._render_ids(messages)
            if len(ids) + self.max_new_tokens <= self.context:
                return messages, ids, dropped
            if len(messages) <= 1:
                raise DodaiError(f"the message is too long: {len(ids)} tokens + {self.max_new_tokens} for the "
                                 f"reply exceed the context of {self.context} tokens (raise --context)")
            messages = messages[2:]  # the oldest exchange: a user message and the reply to it
            dropped += 1

    def reply(self, user_text: str, on_text=None) -> str:
        """Add a user message, generate and return the assistant's reply (streamed to ``on_text``)."""
        import torch

        from dodai.generate.sampling import sample_next
        from dodai.generate.stream import StreamDecoder

        # on an error (too long) the conversation is left as it was
        messages, ids, dropped = self._fit(self.messages + [{"role": "user", "content": user_text}])
        self.messages = messages
        self.dropped_turns += dropped
        # Reuse the cache for the longest common prefix with what it already holds (never all of the
        # prompt: the last prompt token must go through the model to give the next-token logits).
        k = 0
        limit = min(len(ids) - 1, len(self.cached_ids))
        while k < limit and ids[k] == self.cached_ids[k]:
            k += 1
        self.cache.pos = k  # positions >= k are overwritten by this turn
        self.cached_ids = ids[:k]
        self.reused = k
        x = torch.tensor([ids[k:]], dtype=torch.long)
        dec = StreamDecoder(self.tok)
        out_ids: list[int] = []
        with torch.inference_mode():
            for _ in range(self.max_new_tokens):
                logits, _ = self.model(x, cache=self.cache, last_only=True) if _accepts_last_only(self.model) \
                    else self.model(x, cache=self.cache)
                self.cached_ids.extend(x[0].tolist())
                nxt = int(sample_next(logits[:, -1, :].float(), self.temperature, self.top_k, self.top_p,
                                      self.gen).item())
                if nxt in self.stop_ids:
                    break
                out_ids.append(nxt)
                piece = dec.push(nxt)
                if piece and on_text:
                    on_text(piece)
                x = torch.tensor([[nxt]], dtype=torch.long)
        rest = dec.flush()
        if rest and on_text:
            on_text(rest)
        text = self.tok.decode(out_ids)
        self.messages.append({"role": "assistant", "content": text})
        return text


def _accepts_last_only(model) -> bool:
    import inspect

    try:
        return "last_only" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


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
