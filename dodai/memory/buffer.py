"""Short-term memory: the conversation buffer.

A chat model sees only what is in its prompt, and the prompt is bounded by the context window (and by
cost). A *buffer* keeps the most recent part of the conversation that fits a budget:

* :class:`TokenBudgetBuffer` — as many of the newest **turns** as fit ``max_tokens``, counted with the
  real tokenizer on the chat-template rendering of the whole prompt (system message included, with the
  assistant header that ``add_generation_prompt`` appends), because that string — not the raw message
  texts — is what the model reads: ChatML adds ``<|im_start|>role\\n … <|im_end|>\\n`` around every
  message, and some templates inject a default system message.
* :class:`TurnWindowBuffer` — the newest ``max_turns`` turns, whatever their length (LangChain's
  "window" memory).

Conventions. A *turn* is a user message and every non-user message after it (the assistant's reply,
tool output …), so eviction never separates a question from its answer; messages before the first user
message form a turn of their own. The system message is held apart (``.system``) and is never evicted.
Eviction drops whole oldest turns and returns them, so a summariser (dodai.memory.summary) can fold them
into a running summary. After every ``add``/``fit`` that returns, the rendered prompt fits the budget;
when even the newest turn alone does not fit, ``DodaiError`` is raised and the buffer is left unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from dodai.errors import DodaiError

Message = dict  # {"role": str, "content": str}
ROLES = ("system", "user", "assistant", "tool")


def _check_message(role: str, content: str) -> Message:
    if role not in ROLES:
        raise DodaiError(f"unknown message role {role!r} (expected one of {', '.join(ROLES)})")
    if role == "system":
        raise DodaiError("set the system message with .system, not as a turn (it is never evicted)")
    if not isinstance(content, str):
        raise DodaiError(f"message content must be text, got {type(content).__name__}")
    return {"role": role, "content": content}


def split_turns(messages: list[Message]) -> list[list[Message]]:
    """Group messages into turns: each user message starts a new turn (see the module docstring)."""
    turns: list[list[Message]] = []
    for m in messages:
        if m["role"] == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


class TemplateTokenCounter:
    """``counter(messages) -> int``: tokens of the chat-template rendering of ``messages`` (with the
    generation prompt), encoded by the model's own tokenizer — exactly the prompt the model would get."""

    def __init__(self, tokenizer, template=None):
        from dodai.rag.answer import _template

        self.tokenizer = tokenizer
        self.template = template or _template(tokenizer)

    def render(self, messages: list[Message]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def ids(self, messages: list[Message]) -> list[int]:
        return self.tokenizer.encode(self.render(messages))

    def __call__(self, messages: list[Message]) -> int:
        return len(self.ids(messages))


class ConversationBuffer:
    """The shared part: a system message that stays, and the turns after it."""

    def __init__(self, system: str | None = None):
        self.system = system
        self.turns: list[list[Message]] = []
        self.evicted_turns = 0  # how many turns were dropped over the buffer's life

    @property
    def history(self) -> list[Message]:
        """The kept messages, oldest first, without the system message."""
        return [m for t in self.turns for m in t]

    def messages(self) -> list[Message]:
        """The prompt's messages: the system message (if any) and the kept turns."""
        sys_msg = [{"role": "system", "content": self.system}] if self.system is not None else []
        return sys_msg + self.history

    def add(self, role: str, content: str) -> list[Message]:
        """Append a message; returns the messages evicted to make room (oldest first, whole turns)."""
        m = _check_message(role, content)
        before = [list(t) for t in self.turns]
        if m["role"] == "user" or not self.turns:
            self.turns.append([m])
        else:
            self.turns[-1].append(m)
        try:
            return self.fit()
        except DodaiError:
            self.turns = before
            raise

    def fit(self) -> list[Message]:
        """Evict oldest turns until the rule of the buffer holds; returns the evicted messages."""
        raise NotImplementedError

    def clear(self) -> None:
        self.turns = []

    def __len__(self) -> int:
        return len(self.turns)


class TokenBudgetBuffer(ConversationBuffer):
    """The newest whole turns whose rendered prompt is at most ``max_tokens`` tokens.

    ``count_tokens(messages) -> int`` counts the prompt (usually a :class:`TemplateTokenCounter`; tests
    may pass any function). Set ``max_tokens`` to the context window minus the tokens kept for the reply.
    """

    def __init__(self, count_tokens: Callable[[list[Message]], int], max_tokens: int, system: str | None = None):
        if max_tokens < 1:
            raise DodaiError(f"the token budget must be positive, got {max_tokens}")
        super().__init__(system)
        self.count_tokens = count_tokens
        self.max_tokens = int(max_tokens)

    def tokens(self) -> int:
        """Tokens of the current prompt (system message + kept turns + generation prompt)."""
        return self.count_tokens(self.messages())

    def fit(self, target: int | None = None, strict: bool = True) -> list[Message]:
        """Drop oldest turns until the prompt has at most ``target`` (default ``max_tokens``) tokens.

        A lower ``target`` evicts several turns at once (a summariser then runs less often). When the
        system message and the newest turn alone exceed it: ``strict`` raises DodaiError, changing
        nothing; otherwise everything but the newest turn is evicted.
        """
        limit = self.max_tokens if target is None else min(int(target), self.max_tokens)
        n_drop = 0
        sys_msg = [{"role": "system", "content": self.system}] if self.system is not None else []
        # Token counts of renderings are not additive (templates add headers, BPE merges across
        # boundaries), so the whole prompt is re-counted for each candidate: the exact number is what matters.
        while True:
            kept = self.turns[n_drop:]
            n = self.count_tokens(sys_msg + [m for t in kept for m in t])
            if n <= limit:
                break
            if len(kept) <= 1:
                if not strict:
                    break
                what = "the system message" if not kept else "the system message and the newest turn"
                raise DodaiError(f"{what} take {n} tokens, more than the budget of {limit}")
            n_drop += 1
        evicted = [m for t in self.turns[:n_drop] for m in t]
        self.turns = self.turns[n_drop:]
        self.evicted_turns += n_drop
        return evicted


class TurnWindowBuffer(ConversationBuffer):
    """The newest ``max_turns`` turns (a sliding window counted in turns, not tokens)."""

    def __init__(self, max_turns: int, system: str | None = None):
        if max_turns < 1:
            raise DodaiError(f"the window must hold at least one turn, got {max_turns}")
        super().__init__(system)
        self.max_turns = int(max_turns)

    def fit(self) -> list[Message]:
        n_drop = max(0, len(self.turns) - self.max_turns)
        evicted = [m for t in self.turns[:n_drop] for m in t]
        self.turns = self.turns[n_drop:]
        self.evicted_turns += n_drop
        return evicted
