"""Grounded answers: retrieved chunks numbered in the prompt, the model asked to cite them as [n].

The recipe (the "retrieve, then read" pattern of Lewis et al. 2020, "Retrieval-Augmented Generation
for Knowledge-Intensive NLP Tasks", with inline numbered citations as in Gao et al. 2023, "Enabling
Large Language Models to Generate Text with Citations"):

1. retrieve the top-k chunks (:class:`dodai.rag.index.RagIndex`, hybrid by default);
2. **abstain** without calling the model when the best chunk's cosine similarity to the question
   is below ``min_score``: nothing relevant was found, so "I don't know" is the grounded answer;
3. render the model's own chat template with a system instruction and a user message holding the
   numbered sources ``[1] … [k]`` and the question; start the reply with "According to source ["
   (so the model's first choice is which source to cite) and decode greedily;
4. parse the citations ``[n]`` / ``[n, m]`` out of the answer and check that each names one of the
   sources that were shown; an answer with no valid citation (or any invalid one) is not *grounded*.

A 135M-parameter model follows the instruction only partly; :class:`Answer` reports what it did, and
the experiment counts how often the answers cite, cite validly, and cite the relevant document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dodai.errors import DodaiError

IDK = "I don't know."
SYSTEM = ("You answer questions about Python using only the numbered sources. Cite the source you use "
          "with its number in square brackets, like [1]. If the sources do not answer the question, "
          "reply: I don't know.")
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


def build_messages(question: str, hits: list, max_chars: int = 700, title=None) -> list[dict]:
    user = f"Sources:\n\n{format_sources(hits, max_chars, title)}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _template(tokenizer):
    from dodai.generate.session import chat_template_for

    return chat_template_for(tokenizer)


def generate_answer(model, tokenizer, question: str, hits: list, max_new_tokens: int = 96,
                    max_chars: int = 700, title=None, prefix: str = PREFIX) -> Answer:
    """Ask ``model`` to answer ``question`` from ``hits`` (greedy), then parse and check its citations.

    ``prefix`` starts the assistant's reply (part of the answer text): the default "According to
    source [" makes the model choose a source number first — a 135M model left alone rarely cites.
    """
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline
    from dodai.generate.session import stop_ids_for
    from dodai.safety.guards import encode_plain, safe_chat_ids

    if not hits:
        return Answer(question, IDK, [], abstained=True)
    # a retrieved chunk holding "<|im_end|>…" must not become control tokens (R8.2 injection defence)
    ids = safe_chat_ids(_template(tokenizer), tokenizer, build_messages(question, hits, max_chars, title))
    ids += encode_plain(tokenizer, prefix)
    window = model.config.block_size
    if len(ids) + max_new_tokens > window:
        raise DodaiError(f"the prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the model's "
                         f"context of {window}; retrieve fewer chunks")
    out = complete(model, ids, max_new_tokens, LogitsPipeline(temperature=0.0),
                   stop_tokens=sorted(stop_ids_for(tokenizer)), tokenizer=tokenizer)[0]
    text = (prefix + out.text).strip()
    valid, invalid = parse_citations(text, len(hits))
    return Answer(question, text, list(hits), valid, invalid, abstained=bool(_IDK.search(text)),
                  prompt_tokens=len(ids))


def answer(index, model, tokenizer, question: str, k: int = 4, method: str = "hybrid", min_score: float = 0.25,
           max_new_tokens: int = 96, max_chars: int = 700) -> Answer:
    """Retrieve, abstain below ``min_score`` (best cosine), else generate a cited answer."""
    if not question or not question.strip():
        raise DodaiError("the question is empty")
    hits = index.search(question, k=k, method=method)
    best = max((h.dense_score for h in hits if h.dense_score is not None), default=None)
    if not hits or (best is not None and best < min_score):
        return Answer(question, IDK, hits, abstained=True)
    return generate_answer(model, tokenizer, question, hits, max_new_tokens, max_chars, index.title)
