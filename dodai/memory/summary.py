"""Rolling summary memory: what falls out of the buffer is folded into a running summary.

When the token buffer (dodai.memory.buffer) overflows, instead of forgetting the oldest turns we ask
the language model to rewrite ``summary + evicted turns`` into a new, short summary, and keep that
summary in the system message (LangChain's ``ConversationSummaryBufferMemory``; the "recursive
summarisation" of Wang et al. 2023, "Recursively Summarizing Enables Long-Term Dialogue Memory in
Large Language Models", arXiv:2308.15022).

The summariser is any callable ``summariser(previous_summary: str, evicted: list[message]) -> str``:
:class:`LMSummariser` runs a chat model greedily; :func:`extractive_summariser` is a deterministic
stand-in (it keeps the user's own sentences) for tests and quick experiments.

To call the summariser rarely, an overflow evicts down to ``low_water`` × budget tokens at once
(hysteresis), not just one turn. The summary is capped at ``max_summary_chars`` characters (the
newest text is kept); when the summary and the newest turn alone overflow the budget, the summary's
oldest half is dropped (repeatedly) rather than refusing the turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dodai.errors import DodaiError
from dodai.memory.buffer import Message, TokenBudgetBuffer

Summariser = Callable[[str, list[Message]], str]

SUMMARY_SYSTEM = ("You keep notes about a conversation between a user and an assistant. Write the updated notes "
                  "as short sentences about the user. Keep every personal fact the user stated (names, places, "
                  "numbers, pets, allergies, likes, plans) exactly as written. Leave out small talk. "
                  "Reply with the notes only.")
SUMMARY_HEADER = "Notes about the user from earlier in this conversation:"


def transcript(messages: list[Message]) -> str:
    """``User: …`` / ``Assistant: …`` lines, the form the summariser reads."""
    return "\n".join(f"{m['role'].capitalize()}: {' '.join(m['content'].split())}" for m in messages)


def summary_messages(previous: str, evicted: list[Message]) -> list[Message]:
    """The chat messages that ask a model to update ``previous`` with ``evicted``."""
    notes = previous.strip() or "(none yet)"
    return [{"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": f"Current notes:\n{notes}\n\nNew part of the conversation:\n"
                                        f"{transcript(evicted)}\n\nWrite the updated notes."}]


class LMSummariser:
    """Summarise with a chat model, greedily (deterministic), in the model's own chat template."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 96, template=None):
        from dodai.rag.answer import _template

        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.template = template or _template(tokenizer)
        self.calls = 0

    def __call__(self, previous: str, evicted: list[Message]) -> str:
        from dodai.generate.engine import complete
        from dodai.generate.processors import LogitsPipeline
        from dodai.generate.session import stop_ids_for

        ids = self.tokenizer.encode(self.template.render(summary_messages(previous, evicted),
                                                        add_generation_prompt=True))
        window = self.model.config.block_size
        if len(ids) + self.max_new_tokens > window:
            raise DodaiError(f"the summary prompt ({len(ids)} tokens) does not fit the model's window of {window}")
        out = complete(self.model, ids, self.max_new_tokens, LogitsPipeline(temperature=0.0),
                       stop_tokens=sorted(stop_ids_for(self.tokenizer)), tokenizer=self.tokenizer)[0]
        self.calls += 1
        return out.text.strip()


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def extractive_summariser(previous: str, evicted: list[Message]) -> str:
    """A deterministic stand-in for an LM summariser: the previous summary plus the user's statements
    (sentences of user messages that are not questions), in order. No model, no randomness."""
    kept = [previous.strip()] if previous.strip() else []
    for m in evicted:
        if m["role"] != "user":
            continue
        for s in _SENTENCE.findall(m["content"]):
            s = s.strip()
            if s and not s.endswith("?"):
                kept.append(s if s[-1] in ".!" else s + ".")
    return " ".join(kept)


def cap_summary(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, keeping the newest text (cut at a word boundary)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    tail = text[len(text) - max_chars:]
    cut = tail.find(" ")
    return tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail


class SummaryMemory:
    """A token buffer whose evicted turns are summarised into the system message.

    ``base_system`` is the fixed instruction; the prompt's system message is ``base_system`` followed by
    the summary under :data:`SUMMARY_HEADER`. Use :meth:`add` for every message and :meth:`messages`
    for the prompt. ``summariser=None`` forgets evicted turns (a plain token buffer, same interface).
    """

    def __init__(self, buffer: TokenBudgetBuffer, summariser: Summariser | None, base_system: str | None = None,
                 max_summary_chars: int = 800, low_water: float = 0.6):
        if not 0 < low_water <= 1:
            raise DodaiError(f"low_water must be in (0, 1], got {low_water}")
        if max_summary_chars < 1:
            raise DodaiError(f"max_summary_chars must be positive, got {max_summary_chars}")
        self.buffer, self.summariser = buffer, summariser
        self.base_system = base_system
        self.max_summary_chars = int(max_summary_chars)
        self.low_water = float(low_water)
        self.summary = ""
        self.summaries = 0  # summariser calls so far
        self.extra_system = ""  # text the caller adds after the summary (e.g. retrieved memories)
        self._sync_system()

    def system_text(self) -> str | None:
        parts = [p for p in (self.base_system, self.extra_system) if p]
        if self.summary:
            parts.append(f"{SUMMARY_HEADER}\n{self.summary}")
        return "\n\n".join(parts) if parts else None

    def _sync_system(self) -> None:
        self.buffer.system = self.system_text()

    def messages(self) -> list[Message]:
        return self.buffer.messages()

    def set_extra_system(self, text: str) -> list[Message]:
        """Change the caller's part of the system message, then fit (may summarise); returns evicted."""
        b = self.buffer
        before = ([list(t) for t in b.turns], b.evicted_turns, self.summary, self.summaries, self.extra_system)
        self.extra_system = text
        try:
            return self.fit()
        except DodaiError:
            b.turns, b.evicted_turns, self.summary, self.summaries, self.extra_system = before
            self._sync_system()
            raise

    def add(self, role: str, content: str) -> list[Message]:
        """Append a message; overflowing turns are summarised. Returns the messages that were evicted."""
        # Append without fitting first: an overflow is handled here, evicting down to the low-water mark.
        from dodai.memory.buffer import _check_message

        m = _check_message(role, content)
        b = self.buffer
        before = ([list(t) for t in b.turns], b.evicted_turns, self.summary, self.summaries)
        if m["role"] == "user" or not b.turns:
            b.turns.append([m])
        else:
            b.turns[-1].append(m)
        try:
            return self.fit()
        except DodaiError:
            b.turns, b.evicted_turns, self.summary, self.summaries = before
            self._sync_system()
            raise

    def fit(self) -> list[Message]:
        """While the prompt exceeds the budget: evict to the low-water mark and fold the evicted turns
        into the summary (the summary grows, so this may take more than one round)."""
        b = self.buffer
        self._sync_system()
        if self.summariser is None:  # a plain buffer: the evicted turns are forgotten
            return b.fit()
        evicted_all: list[Message] = []
        while b.tokens() > b.max_tokens:
            evicted = b.fit(target=int(b.max_tokens * self.low_water), strict=False)
            if not evicted:  # only the newest turn is left: shorten the summary (its oldest part goes)
                if not self.summary:
                    b.fit()  # raises with the reason
                    break
                self.summary = cap_summary(self.summary, len(self.summary) // 2) if len(self.summary) > 40 else ""
                self._sync_system()
                continue
            self.summary = cap_summary(self.summariser(self.summary, evicted), self.max_summary_chars)
            self.summaries += 1
            evicted_all += evicted
            self._sync_system()
        return evicted_all

    def compact(self) -> list[Message]:
        """Summarise now: evict down to the low-water mark (keeping the newest turn) and fold the evicted
        turns into the summary, leaving room for the next messages. Returns the evicted messages."""
        b = self.buffer
        if self.summariser is None or b.tokens() <= int(b.max_tokens * self.low_water):
            return []
        evicted = b.fit(target=int(b.max_tokens * self.low_water), strict=False)
        if evicted:
            self.summary = cap_summary(self.summariser(self.summary, evicted), self.max_summary_chars)
            self.summaries += 1
            self._sync_system()
        return evicted + self.fit()

    def clear(self) -> None:
        self.buffer.clear()
        self.summary = ""
        self._sync_system()
