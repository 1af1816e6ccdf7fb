"""Chat: templates, stop tokens and the multi-turn session, on the one decode loop.

A chat model was fine-tuned on prompts rendered by its own Jinja chat template (:mod:`dodai.chat_template`;
SmolLM2's is ChatML: ``<|im_start|>user\\n…<|im_end|>\\n``). :func:`chat_template_for` gives a tokenizer's
template (ChatML for models without one), :func:`stop_ids_for` the token ids that end an assistant turn, and
:func:`render_chat_ids` the prompt ids with control strings typed by a user kept as text
(:func:`dodai.safety.guards.safe_chat_ids`, R8.2), so user content can never forge a system turn.

:class:`ChatSession` is the conversation state behind ``dodai chat`` (and, with memory, behind
:class:`dodai.memory.agent.MemoryChat`): each turn re-renders the whole conversation and tokenizes it; the
session's KV cache keeps the tokens of the previous turn, so only the part after the longest common prefix
goes through the model (usually just the new user message). When the conversation no longer fits the
context, the oldest exchanges are dropped (the system message stays).
"""

from __future__ import annotations

from dodai.errors import DodaiError

# The ChatML template (as used by SmolLM2 and Qwen) for models that carry no template of their own.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
# Special tokens that end an assistant turn, for the chat formats dodai knows (ChatML, Llama 3, Gemma, SPM).
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def special_names(tokenizer) -> dict[str, str]:
    """The template variables ``bos_token`` / ``eos_token`` for a tokenizer (HF passes them to every render)."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    by_id = {i: s for s, i in specials.items()}
    return {"bos_token": by_id.get(getattr(tokenizer, "bos_id", None), ""),
            "eos_token": by_id.get(getattr(tokenizer, "eos_id", None), "")}


def text_prompt_ids(tokenizer, text: str) -> list[int]:
    """A raw-text prompt's ids as the model expects them: BOS first when the tokenizer says raw text starts with
    one (``add_bos``, e.g. Gemma, whose continuations without it are not its own; HF's tokenizer adds it too).
    Chat prompts get their BOS from the template instead."""
    ids = tokenizer.encode(text)
    bos = getattr(tokenizer, "bos_id", None)
    if ids and getattr(tokenizer, "add_bos", False) and bos is not None and ids[0] != bos:
        ids = [bos] + ids
    return ids


def chat_template_for(tokenizer, template=None):
    """A compiled :class:`~dodai.chat_template.ChatTemplate`: ``template`` (source or compiled), else the
    tokenizer's own, else ChatML."""
    from dodai.chat_template import ChatTemplate

    src = template or getattr(tokenizer, "chat_template", None) or CHATML
    return src if isinstance(src, ChatTemplate) else ChatTemplate(src, special_names(tokenizer))


def stop_ids_for(tokenizer) -> set[int]:
    """Token ids that end an assistant turn: the known end-of-turn specials present, plus the EOS id."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    ids = {specials[s] for s in STOP_TOKENS if s in specials}
    if getattr(tokenizer, "eos_id", None) is not None:
        ids.add(tokenizer.eos_id)
    return ids


def render_chat_ids(template, tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Prompt ids for ``messages``; control strings inside message content stay text (R8.2)."""
    from dodai.safety.guards import safe_chat_ids

    return safe_chat_ids(template, tokenizer, messages, add_generation_prompt=add_generation_prompt)


class ChatSession:
    """The conversation state: messages, and a session KV cache holding the last turn's tokens."""

    def __init__(self, model, tokenizer, template=None, system: str | None = None, context: int = 2048,
                 temperature: float = 0.2, top_k: int | None = None, top_p: float | None = 0.9,
                 seed: int | None = None, max_new_tokens: int = 256):
        import torch

        from dodai.generate.engine import DenseBackend
        from dodai.generate.processors import LogitsPipeline

        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise DodaiError(f"--max-new-tokens must be positive, got {max_new_tokens}")
        self.pipe = LogitsPipeline(temperature=temperature, top_k=top_k, top_p=top_p)  # validates the knobs
        self.model, self.tok = model, tokenizer
        self.template = chat_template_for(tokenizer, template)
        self.context = min(int(context), model.config.block_size)
        if self.context < 16:
            raise DodaiError(f"--context must be at least 16 tokens, got {context}")
        self.max_new_tokens = min(max_new_tokens, self.context // 2)
        self.stop_ids = stop_ids_for(tokenizer)
        # one generator for the whole conversation: same seed and same turns -> same replies
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.backend = DenseBackend(model, keep=True, capacity=self.context)
        self.reused = 0  # prompt tokens the last turn took from the cache instead of recomputing
        self.system = system
        self.messages: list[dict] = []
        self.dropped_turns = 0

    @property
    def cached_ids(self) -> list[int]:
        """The ids whose keys/values the session cache holds (positions 0 .. n-1)."""
        return self.backend.held

    def reset(self, system: str | None = None, keep_system: bool = True) -> None:
        if not keep_system:
            self.system = system
        self.messages = []

    def _render_ids(self, messages: list[dict]) -> list[int]:
        msgs = ([{"role": "system", "content": self.system}] if self.system is not None else []) + messages
        return render_chat_ids(self.template, self.tok, msgs)

    def _fit(self, messages: list[dict]) -> tuple[list[dict], list[int], int]:
        """(kept messages, prompt ids, exchanges dropped): the oldest turns go until prompt + reply fit."""
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

    def generate_ids(self, ids: list[int], on_text=None, max_new_tokens: int | None = None,
                     pipeline=None) -> tuple[str, list[int]]:
        """Continue prompt ids on the session cache; (reply text, reply ids without the end token)."""
        from dodai.generate.engine import Engine, Request

        req = Request(ids, max_new_tokens or self.max_new_tokens, pipeline or self.pipe, stop_ids=self.stop_ids,
                      tokenizer=self.tok, stream_text=True)
        self.backend.model = self.model  # the session's model may be swapped (a wrapper, a quantised copy)
        engine = Engine(self.model, self.backend)
        engine.add(req)
        req.gen = self.gen
        for _ in engine.run():
            piece = req.take_text()
            if piece and on_text:
                on_text(piece)
        self.reused = req.prompt_cached
        out = req.ids[:-1] if req.finish_reason == "eos" else req.ids
        return self.tok.decode(out), out

    def reply(self, user_text: str, on_text=None) -> str:
        """Add a user message, generate and return the assistant's reply (streamed to ``on_text``)."""
        # on an error (too long) the conversation is left as it was
        messages, ids, dropped = self._fit(self.messages + [{"role": "user", "content": user_text}])
        self.messages = messages
        self.dropped_turns += dropped
        text, _ = self.generate_ids(ids, on_text)
        self.messages.append({"role": "assistant", "content": text})
        return text
