"""Answers from retrieved sources: a short extracted span by default, a cited generation when asked.

The recipe ("retrieve, then read", Lewis et al. 2020, "Retrieval-Augmented Generation for Knowledge-Intensive
NLP Tasks"):

1. retrieve the top-k chunks (:class:`dodai.rag.index.RagIndex`, hybrid by default);
2. **abstain** without calling the model when the best chunk's cosine similarity to the question is below
   ``min_score``: nothing relevant was found, so "I don't know" is the grounded answer;
3. render the model's own chat template with a corpus-neutral system instruction (:func:`system_prompt`: the
   index's own description when it has one, or the caller's ``system``) and a user message holding the
   numbered sources ``[1] … [k]`` and the question;
4. answer in one of two modes:

   * ``"extract"`` (the default, :func:`extract_answer`): the reply is decoded greedily under
     :class:`dodai.rag.extract.SpanConstraint`, so it is a span copied from the sources — a short answer in
     the reading-comprehension sense — and its citation is the best-ranked source that holds the span;
   * ``"generate"`` (:func:`generate_answer`): free generation that starts with "According to source [" (so
     the model's first choice is which source to cite), with inline numbered citations as in Gao et al. 2023,
     "Enabling Large Language Models to Generate Text with Citations"; citations ``[n]`` / ``[n, m]`` are
     parsed and checked, and an answer with no valid citation (or any invalid one) is not *grounded*.

:class:`Answer` reports what the model did; :mod:`dodai.rag.evalset` scores answers against references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dodai.errors import DodaiError

IDK = "I don't know."
MODES = ("extract", "generate")
# Corpus-neutral: nothing here names what the sources are about (the index's description may, see system_prompt)
SYSTEM = ("Answer the question using only the numbered sources. Cite the source you use with its number in "
          "square brackets, like [1]. If the sources do not answer the question, reply: I don't know.")
EXTRACT_SYSTEM = ("Answer the question with the shortest phrase from the numbered sources that answers it: "
                  "a name, a number, a date or a few words, copied exactly.")
# Worked examples for the extractive mode (written for dodai; about nothing any evaluation set covers), shown as
# earlier turns so a small model sees the form of a short answer before the real sources.
EXTRACT_SHOTS = [
    (["The lighthouse on Skerry Point was built in 1871 by the engineer Alan Brodie. Its lamp was first lit "
      "with paraffin and was converted to electricity in 1923.",
      "Skerry Point is a headland on the north coast, known for its colonies of puffins and grey seals."],
     "Who built the lighthouse on Skerry Point?", "Alan Brodie"),
    (["The Tallow Valley railway opened in 1862 to carry slate from the quarries to the harbour at Porth "
      "Wen. At its peak the line moved 40,000 tonnes of slate a year.",
      "Slate from the valley was shipped to Liverpool and Hamburg, where it was used for roofing."],
     "How much slate did the line move at its peak each year?", "40,000 tonnes"),
]
PREFIX = "According to source ["
_CITE = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
_IDK = re.compile(r"\bI\s+(?:do not|don't|don’t)\s+know\b", re.IGNORECASE)


@dataclass
class Answer:
    question: str
    text: str
    sources: list  # the Hits shown to the model, in prompt order: [1] is sources[0]
    citations: list[int] = field(default_factory=list)  # valid cited numbers (1-based), in order of first use
    invalid_citations: list[int] = field(default_factory=list)  # cited numbers that name no source
    abstained: bool = False  # "I don't know": by the score threshold or said by the model
    prompt_tokens: int = 0

    @property
    def grounded(self) -> bool:
        return bool(self.citations) and not self.invalid_citations

    def cited_sources(self) -> list:
        return [self.sources[n - 1] for n in self.citations]


def parse_citations(text: str, n_sources: int) -> tuple[list[int], list[int]]:
    """(valid, invalid) citation numbers in ``text``, each once, in order of first appearance."""
    valid, invalid = [], []
    for m in _CITE.finditer(text):
        for tok in m.group(1).split(","):
            n = int(tok)
            target = valid if 1 <= n <= n_sources else invalid
            if n not in target:
                target.append(n)
    return valid, invalid


def format_sources(hits: list, max_chars: int = 700, title=None) -> str:
    """The numbered source block: ``[n] (title) text`` per hit, each text cut at ``max_chars``."""
    lines = []
    for n, h in enumerate(hits, start=1):
        text = " ".join(h.chunk.text.split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " …"
        head = f"[{n}] ({title(h.chunk.source)}) " if title else f"[{n}] "
        lines.append(head + text)
    return "\n\n".join(lines)


def system_prompt(description: str | None = None, system: str | None = None, mode: str = "extract") -> str:
    """The system instruction: ``system`` verbatim when given, else the mode's corpus-neutral instruction,
    preceded by "The sources are from <description>." when the index carries a description."""
    if system is not None:
        return system
    base = EXTRACT_SYSTEM if mode == "extract" else SYSTEM
    return f"The sources are from {description.strip()}. {base}" if description and description.strip() else base


def build_messages(question: str, hits: list, max_chars: int = 700, title=None, system: str | None = None
                   ) -> list[dict]:
    user = f"Sources:\n\n{format_sources(hits, max_chars, title)}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM if system is None else system}, {"role": "user", "content": user}]


def _template(tokenizer):
    from dodai.generate.session import chat_template_for

    return chat_template_for(tokenizer)


def _prompt_ids(tokenizer, messages: list[dict], window: int, max_new_tokens: int) -> list[int]:
    from dodai.safety.guards import safe_chat_ids

    # a retrieved chunk holding "<|im_end|>…" must not become control tokens (R8.2 injection defence)
    ids = safe_chat_ids(_template(tokenizer), tokenizer, messages)
    if len(ids) + max_new_tokens > window:
        raise DodaiError(f"the prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the model's "
                         f"context of {window}; retrieve fewer chunks")
    return ids


def generate_answer(model, tokenizer, question: str, hits: list, max_new_tokens: int = 96,
                    max_chars: int = 700, title=None, prefix: str = PREFIX, system: str | None = None) -> Answer:
    """Ask ``model`` to answer ``question`` from ``hits`` (greedy), then parse and check its citations.

    ``prefix`` starts the assistant's reply (part of the answer text): the default "According to
    source [" makes the model choose a source number first — a 135M model left alone rarely cites.
    """
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline
    from dodai.generate.session import stop_ids_for
    from dodai.safety.guards import encode_plain

    if not hits:
        return Answer(question, IDK, [], abstained=True)
    msgs = build_messages(question, hits, max_chars, title, system)
    ids = _prompt_ids(tokenizer, msgs, model.config.block_size, max_new_tokens)
    ids += encode_plain(tokenizer, prefix)
    if len(ids) + max_new_tokens > model.config.block_size:
        raise DodaiError(f"the prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the model's "
                         f"context of {model.config.block_size}; retrieve fewer chunks")
    out = complete(model, ids, max_new_tokens, LogitsPipeline(temperature=0.0),
                   stop_tokens=sorted(stop_ids_for(tokenizer)), tokenizer=tokenizer)[0]
    text = (prefix + out.text).strip()
    valid, invalid = parse_citations(text, len(hits))
    return Answer(question, text, list(hits), valid, invalid, abstained=bool(_IDK.search(text)),
                  prompt_tokens=len(ids))


class Reader:
    """The model side of extractive answering, holding a session KV cache (``DenseBackend(keep=True)``):
    consecutive questions over the same sources share the prompt prefix (system + sources), so only the
    question and the answer go through the model again."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 16, max_chars: int = 800, shots=EXTRACT_SHOTS,
                 ban_question_words: bool = True, n_sentences: int = 1):
        from dodai.generate.engine import DenseBackend
        from dodai.generate.session import stop_ids_for

        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.max_chars = max_new_tokens, max_chars
        self.end_ids = sorted(stop_ids_for(tokenizer))
        self.backend = DenseBackend(model, keep=True)
        self.shots = list(shots)
        self.ban_question_words = ban_question_words
        self.n_sentences = n_sentences

    def extract(self, question: str, hits: list, title=None, system: str | None = None, idf=None) -> Answer:
        """A span of the sources chosen by the model under :class:`~dodai.rag.extract.SpanConstraint`."""
        from dodai.generate.constrained import ConstrainedPipeline
        from dodai.generate.engine import Request, run_requests
        from dodai.rag.extract import SpanConstraint

        if not hits:
            return Answer(question, IDK, [], abstained=True)
        msgs = build_messages(question, hits, self.max_chars, title,
                              EXTRACT_SYSTEM if system is None else system)
        msgs = msgs[:1] + shot_messages(self.shots) + msgs[1:]
        ids = _prompt_ids(self.tok, msgs, self.model.config.block_size, self.max_new_tokens)
        shown = [_shown_text(h.chunk.text, self.max_chars) for h in hits]
        domain, owner = shown, list(range(len(shown)))
        if self.n_sentences:
            domain, owner = answer_sentences(question, shown, self.n_sentences, idf)
        con = SpanConstraint(domain, self.tok, self.end_ids, self.model.config.vocab_size,
                             banned_starts=banned_starts(question) if self.ban_question_words else ())
        pipe = ConstrainedPipeline(temperature=0.0, constraint=con)
        req = Request(ids, self.max_new_tokens, pipe, stop_ids=self.end_ids, tokenizer=self.tok)
        out = run_requests(self.model, [req], self.backend)[0]
        text = out.text.strip()
        where = con.locate(text) if text else []
        while text and not where:  # cut off by the token budget inside a word: back to the last whole word
            text = text.rsplit(" ", 1)[0] if " " in text else ""
            where = con.locate(text) if text else []
        return Answer(question, text or IDK, list(hits), [owner[where[0]] + 1] if where else [], [],
                      abstained=not text, prompt_tokens=len(ids))


def answer_sentences(question: str, texts: list[str], n: int, idf=None) -> tuple[list[str], list[int]]:
    """The ``n`` sentences of ``texts`` that share the most with ``question`` (the sum of the idf weights of the
    question's words they contain, :func:`dodai.rag.bm25.tokenize` words; stop words weigh nothing), in
    reading order, and the index of the text each comes from. Ties: the earlier sentence."""
    from dodai.rag.bm25 import tokenize
    from dodai.rag.chunk import sentences

    words = {w for w in tokenize(question) if w not in STOP_STARTS}
    scored = []
    for t, text in enumerate(texts):
        for a, b in sentences(text):
            sent_words = set(tokenize(text[a:b]))
            score = sum(idf(w) if idf is not None else 1.0 for w in words & sent_words)
            scored.append((-score, len(scored), text[a:b], t))
    best = sorted(sorted(scored)[:n], key=lambda x: x[1])
    return [x[2] for x in best], [x[3] for x in best]


# Function words an answer span does not start with (SQuAD's normalisation drops the articles anyway)
STOP_STARTS = frozenset("""a an the of in on at to and or but for by with from as into than that this these those
is was were are be been being has have had do does did it its they them their he him his she her we our you your
which who whom whose what when where why how there here also not no so such i me my mine""".split())


def banned_starts(question: str) -> set[str]:
    """Words an extracted answer may not start with: the question's own words and :data:`STOP_STARTS`.
    An answer restates nothing of its question (the classic reading-comprehension heuristic; a model left to
    itself copies the sentence that restates the question: "The chains were made of silver")."""
    words = {w.lower() for w in re.findall(r"[\w'’-]+", question)}
    words |= {re.sub(r"['’]s?$", "", w) for w in words}  # "Isaac's" bars "Isaac" too
    return words | STOP_STARTS


def shot_messages(shots) -> list[dict]:
    """The worked examples as user/assistant turns (sources numbered as in :func:`format_sources`)."""
    msgs = []
    for sources, q, a in shots:
        block = "\n\n".join(f"[{n}] {t}" for n, t in enumerate(sources, start=1))
        msgs += [{"role": "user", "content": f"Sources:\n\n{block}\n\nQuestion: {q}"},
                 {"role": "assistant", "content": a}]
    return msgs


def _shown_text(text: str, max_chars: int) -> str:
    """A chunk's text as :func:`format_sources` shows it (whitespace-normalised, cut at ``max_chars``)."""
    text = " ".join(text.split())
    return text[:max_chars].rsplit(" ", 1)[0] if len(text) > max_chars else text


def extract_answer(model, tokenizer, question: str, hits: list, max_new_tokens: int = 16, max_chars: int = 800,
                   title=None, system: str | None = None) -> Answer:
    """One extractive answer (see :class:`Reader` to answer many questions with prefix reuse)."""
    return Reader(model, tokenizer, max_new_tokens, max_chars).extract(question, hits, title, system)


def best_cosine(hits: list) -> float | None:
    return max((h.dense_score for h in hits if h.dense_score is not None), default=None)


def answer(index, model, tokenizer, question: str, k: int = 4, method: str = "hybrid", min_score: float = 0.25,
           max_new_tokens: int | None = None, max_chars: int = 700, mode: str = "extract",
           system: str | None = None, reader: Reader | None = None) -> Answer:
    """Retrieve, abstain below ``min_score`` (best cosine), else answer: an extracted span (``mode="extract"``)
    or a generated, cited answer (``mode="generate"``)."""
    if mode not in MODES:
        raise DodaiError(f"unknown answer mode {mode!r} ({', '.join(MODES)})")
    if not question or not question.strip():
        raise DodaiError("the question is empty")
    hits = index.search(question, k=k, method=method)
    best = best_cosine(hits)
    if not hits or (best is not None and best < min_score):
        return Answer(question, IDK, hits, abstained=True)
    sys_msg = system_prompt(getattr(index, "description", None), system, mode)
    if mode == "generate":
        return generate_answer(model, tokenizer, question, hits, max_new_tokens or 96, max_chars, index.title,
                               system=sys_msg)
    r = reader or Reader(model, tokenizer, max_new_tokens or 16, max_chars)
    return r.extract(question, hits, index.title, sys_msg)
