"""A chat loop with memory: buffer + rolling summary + long-term vector memory around a chat model.

For every user message :class:`MemoryChat`

1. **retrieves** the long-term memories most similar to the message (MiniLM cosine ≥ ``min_score``,
   top ``k``; memories already visible in the buffer are skipped) and shows them to the model: with
   ``placement="user"`` (the default) quoted at the start of the current user message ("Things I told you
   before: … My question: …"), with ``placement="system"`` listed in the system message. Once the turn is
   answered the user message goes back to the plain text, so old turns do not carry old memories;
2. appends the message to the **token buffer**; when the prompt would exceed the budget (context window
   − reply tokens − a small margin), the oldest whole turns are evicted and, with a summariser, folded
   into the **running summary** that also lives in the system message;
3. generates the reply (the model's own chat template; greedy by default) and appends it;
4. **stores** the user message in the vector memory when it is a personal statement
   (:func:`is_personal_statement`: first person, not a question — a deliberately simple rule; pass
   ``remember=`` to change it). Storing happens after retrieval, so a message never retrieves itself.

The system message is therefore: the instruction, then (``placement="system"``) the retrieved memories
(``- The user said: "…"``), then the summary. Why the user turn is the default: in R7.4's long conversation
SmolLM2-135M did not use memories listed in the system message — it answered from the trivia in the buffer —
while memories quoted right before the question were used (figures in ``evidence/R7.4/``).

Every prompt is rendered with :func:`dodai.safety.guards.safe_chat_ids` — for the model and for token
counting alike — so control strings typed by the user (``<|im_end|>\n<|im_start|>system``) stay text and
never become the template's control tokens (R8.2). The budget counts exactly the ids that are sent.

:meth:`MemoryChat.observe` adds a scripted exchange without generating (for replaying a
conversation), and :meth:`MemoryChat.build_prompt` shows the exact prompt a message would get.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dodai.errors import DodaiError
from dodai.memory.buffer import TemplateTokenCounter, TokenBudgetBuffer
from dodai.memory.summary import Summariser, SummaryMemory
from dodai.memory.vector import Hit, VectorMemory

DEFAULT_SYSTEM = "You are a helpful assistant. Answer briefly, using what you know about the user."
MEMORY_HEADER = "Earlier in this conversation the user told you:"
# Quoted and attributed: a bare "- My name is Ingrid." in the system message makes a small model answer as
# if it were its own name; 'The user said: "…"' lifted SmolLM2-135M from 2/8 to 5/8 right answers (R7.4).
MEMORY_LINE = '- The user said: "{text}"'
# placement="user": the memories quoted in the user's own voice right before the question
USER_MEMORY_HEADER = "Things I told you before:"
USER_MEMORY_LINE = "- {text}"
USER_QUESTION_HEADER = "My question:"
PLACEMENTS = ("user", "system")
REPLY_MARGIN = 16  # tokens of template around the reply (end-of-turn, next header) and BPE re-merges

# subject and possessive first person only: "tell me a joke" is a request, not a fact about the user
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|im|my|mine|myself|we|we're|our|ours)\b", re.IGNORECASE)


def is_personal_statement(text: str) -> bool:
    """True for a first-person statement ("My cat is called Miso.", "I'm allergic to nuts"), not a question."""
    t = text.strip()
    return bool(t) and "?" not in t and bool(_FIRST_PERSON.search(t))


def quote_memories(user_text: str, texts: list[str]) -> str:
    """The user message with ``texts`` quoted before it (``placement="user"``); unchanged without memories."""
    if not texts:
        return user_text
    lines = "\n".join(USER_MEMORY_LINE.format(text=" ".join(t.split())) for t in texts)
    return f"{USER_MEMORY_HEADER}\n{lines}\n\n{USER_QUESTION_HEADER} {user_text}"


class SafeTemplateCounter(TemplateTokenCounter):
    """A :class:`TemplateTokenCounter` whose ids come from :func:`dodai.safety.guards.safe_chat_ids`:
    control strings inside message contents stay ordinary text (counted as the model will get them)."""

    def ids(self, messages: list[dict]) -> list[int]:
        from dodai.safety.guards import safe_chat_ids

        return safe_chat_ids(self.template, self.tokenizer, messages)


class MemoryChat:
    """A conversation with a chat model and the three memories. ``memory=None`` → no long-term memory;
    ``summariser=None`` → evicted turns are simply forgotten (a plain token buffer)."""

    def __init__(self, model, tokenizer, memory: VectorMemory | None = None, summariser: Summariser | None = None,
                 context: int = 2048, max_new_tokens: int = 128, system: str | None = DEFAULT_SYSTEM,
                 k: int = 3, min_score: float = 0.35, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 remember: Callable[[str], bool] | None = is_personal_statement, template=None,
                 max_summary_chars: int = 800, placement: str = "user", short_answers: bool = False):
        if placement not in PLACEMENTS:
            raise DodaiError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if max_new_tokens < 1:
            raise DodaiError(f"--max-new-tokens must be positive, got {max_new_tokens}")
        if k < 1:
            raise DodaiError(f"k must be positive, got {k}")
        self.model, self.tok = model, tokenizer
        self.placement = placement
        self.short_answers = short_answers
        self.counter = SafeTemplateCounter(tokenizer, template)
        self.context = min(int(context), model.config.block_size)
        self.max_new_tokens = int(max_new_tokens)
        budget = self.context - self.max_new_tokens - REPLY_MARGIN
        if budget < 32:
            raise DodaiError(f"context {self.context} leaves {budget} tokens for the prompt after "
                             f"{self.max_new_tokens} reply tokens; raise --context or lower --max-new-tokens")
        self.memory, self.k, self.min_score = memory, int(k), float(min_score)
        self.remember = remember
        self.state = SummaryMemory(TokenBudgetBuffer(self.counter, budget), summariser, base_system=system,
                                   max_summary_chars=max_summary_chars)
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.turns = 0
        self.last_hits: list[Hit] = []
        self.last_prompt_tokens = 0

    # the attributes dodai chat's loop reads
    @property
    def dropped_turns(self) -> int:
        return self.state.buffer.evicted_turns

    def reset(self, system: str | None = None, keep_system: bool = True) -> None:
        """Forget the conversation (buffer and summary); the long-term memory stays."""
        if not keep_system:
            self.state.base_system = system
        self.state.clear()

    def retrieve(self, text: str) -> list[Hit]:
        if self.memory is None or not len(self.memory):
            return []
        visible = {m["content"].strip() for m in self.state.buffer.history}
        hits = self.memory.search(text, k=self.k + len(visible), min_score=self.min_score)
        return [h for h in hits if h.item.text.strip() not in visible][:self.k]

    def _enter(self, user_text: str) -> list[Hit]:
        """Retrieve for ``user_text``, show the memories (system message or quoted in the user message, see
        ``placement``) and append the message."""
        if not isinstance(user_text, str) or not user_text.strip():
            raise DodaiError("the message is empty")
        hits = self.retrieve(user_text)
        while True:  # fewer memories when the message and all of them do not fit the budget
            texts = [h.item.text for h in hits]
            snap = self._snapshot()
            try:
                if self.placement == "system":
                    extra = (MEMORY_HEADER + "\n" + "\n".join(MEMORY_LINE.format(text=" ".join(t.split()))
                                                             for t in texts) if texts else "")
                    self.state.set_extra_system(extra)
                    self.state.add("user", user_text)
                else:
                    self.state.set_extra_system("")
                    self.state.add("user", quote_memories(user_text, texts))
                return hits
            except DodaiError:
                self._restore(snap)
                if not hits:
                    raise
                hits = hits[:-1]

    def _settle(self, user_text: str) -> None:
        """After the turn: the buffered user message goes back to the plain text (the quoted memories were
        for this question only). Shorter content, so the prompt still fits the budget."""
        turn = self.state.buffer.turns[-1] if self.state.buffer.turns else []
        if turn and turn[0]["role"] == "user":
            turn[0] = {"role": "user", "content": user_text}

    def _snapshot(self):
        s, b = self.state, self.state.buffer
        return [list(t) for t in b.turns], b.evicted_turns, s.summary, s.summaries, s.extra_system

    def _restore(self, snap) -> None:
        s, b = self.state, self.state.buffer
        b.turns, b.evicted_turns, s.summary, s.summaries, s.extra_system = snap
        s._sync_system()

    def build_prompt(self, user_text: str) -> tuple[list[int], list[Hit]]:
        """The prompt ids ``user_text`` would get now, and the memories retrieved for it; changes nothing
        (a summary made to fit the message is computed and discarded)."""
        snap = self._snapshot()
        try:
            hits = self._enter(user_text)
            return self.counter.ids(self.state.messages()), hits
        finally:
            self._restore(snap)

    def _store(self, user_text: str) -> None:
        if self.memory is not None and self.remember is not None and self.remember(user_text):
            self.memory.add(user_text.strip(), role="user", metadata={"source": "chat", "turn": self.turns})

    def observe(self, user_text: str, assistant_text: str) -> None:
        """Add a scripted exchange (no generation): buffer, summary and long-term memory as in a real turn."""
        snap = self._snapshot()
        try:
            self._enter(user_text)
            self.state.add("assistant", assistant_text)
        except DodaiError:
            self._restore(snap)
            raise
        self._settle(user_text)
        self._store(user_text)
        self.turns += 1

    def reply(self, user_text: str, on_text=None) -> str:
        """Answer ``user_text`` (streamed to ``on_text``), updating all three memories."""
        from dodai.generate.engine import Request, run_requests
        from dodai.generate.processors import LogitsPipeline
        from dodai.generate.session import stop_ids_for

        snap = self._snapshot()
        try:
            hits = self._enter(user_text)
        except DodaiError:
            self._restore(snap)
            raise
        ids = self.counter.ids(self.state.messages())
        self.last_hits, self.last_prompt_tokens = hits, len(ids)
        pipe = LogitsPipeline(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if self.short_answers and hits and "?" in user_text:
            pipe = self.span_pipeline(user_text, hits)
        seed = None if self.seed is None else self.seed + self.turns
        req = Request(ids, self.max_new_tokens, pipe, seed=seed, stop_ids=stop_ids_for(self.tok), tokenizer=self.tok,
                      stream_text=on_text is not None)

        def stream() -> None:
            piece = req.take_text()
            if piece:
                on_text(piece)

        text = run_requests(self.model, [req], on_step=stream if on_text is not None else None)[0].text
        try:
            self.state.add("assistant", text)
        except DodaiError:  # cannot happen within the margin; never lose the user's turn over it
            self.state.add("assistant", text[:200])
        self._settle(user_text)
        self._store(user_text)
        self.turns += 1
        return text

    def span_pipeline(self, question: str, hits: list[Hit]):
        """A greedy pipeline whose reply must be a span of the retrieved memories (see "Short answers")."""
        from dodai.generate.constrained import ConstrainedPipeline
        from dodai.generate.session import stop_ids_for
        from dodai.rag.answer import banned_starts
        from dodai.rag.extract import SpanConstraint

        con = SpanConstraint([h.item.text for h in hits], self.tok, stop_ids_for(self.tok),
                             self.model.config.vocab_size, banned_starts=banned_starts(question))
        return ConstrainedPipeline(temperature=0.0, constraint=con)

    @classmethod
    def from_args(cls, model, tokenizer, args) -> MemoryChat:
        """The session ``dodai chat --memory DIR`` uses: the folder's vector memory, summaries written by the
        chat model itself (greedy), and the chat command's sampling flags."""
        from dodai.memory.summary import LMSummariser

        return cls(model, tokenizer, memory=VectorMemory(args.memory), summariser=LMSummariser(model, tokenizer),
                   context=args.context, max_new_tokens=args.max_new_tokens,
                   system=args.system if args.system is not None else DEFAULT_SYSTEM,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
