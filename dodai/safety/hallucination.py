"""Hallucination (R8.1): uncertainty from the model's own logits, abstention, and grounding checks.

Three tools, each usable alone:

1. **Uncertainty** of a generated answer, from the logits of dodai's own model. For answer tokens
   y_1 … y_T after a prompt x, with p_t = softmax(logits_t) the model's next-token distribution:

   * token entropy  H_t = −Σ_v p_t(v) log p_t(v)  (nats) — mean, max and min over the answer;
   * token log-prob  log p_t(y_t) — mean and min; sequence log-prob  Σ_t log p_t(y_t);
   * self-consistency: the share of k sampled answers (temperature 1) that agree with the greedy
     answer after normalisation (Wang et al. 2023, "Self-Consistency Improves Chain of Thought
     Reasoning"; used as a hallucination detector by Manakul et al. 2023, "SelfCheckGPT").

   Entropy and log-prob as confidence signals follow Kadavath et al. 2022 ("Language Models (Mostly)
   Know What They Know") and Malinin & Gales 2021 ("Uncertainty Estimation in Autoregressive
   Structured Prediction"). The logits are recomputed by one teacher-forced forward pass over
   prompt + greedy answer (:func:`score_continuation`), which equals what the decoder saw step by step.

2. **Abstention** (selective prediction, Geifman & El-Yaniv 2017): answer when confidence ≥ a
   threshold, else "I don't know". :func:`choose_threshold` picks the threshold on a dev split by
   maximising a utility (+1 per correct answer, −``wrong_cost`` per wrong one, 0 per abstention);
   :func:`risk_coverage` gives the risk–coverage curve and its area (AURC); :func:`auroc` measures
   how well a signal ranks correct answers above wrong ones (Mann–Whitney U with tied ranks averaged).

3. **Grounding / faithfulness** of an answer against its sources (for :mod:`dodai.rag.answer`): every
   answer sentence must be supported by the source text. A sentence is *unsupported* when a number
   or a name in it occurs nowhere in the sources, or when neither its content-word overlap with the
   sources nor its MiniLM cosine similarity to the best source sentence reaches a threshold. These
   are the lexical and embedding checks of the faithfulness literature (e.g. Honovich et al. 2022,
   "TRUE: Re-evaluating Factual Consistency Evaluation"; Es et al. 2023, "RAGAS"), reduced to what a
   CPU does in milliseconds; an NLI model would be the stronger (and slower) judge.

A real fact set with natural labels, offline: the country→capital, country→currency and
city→U.S.-state rows of the word-analogy test file ``questions-words.txt`` (Mikolov et al. 2013) that
gensim's wheel ships as test data. :func:`load_fact_set` fetches the wheel with ``pip download
--no-deps`` (gensim is never installed or imported), reads that one file from the zip, checks its
sha256 and keeps it in the cache. No TruthfulQA copy is available from a package registry.

Notation: T answer tokens, V vocabulary size.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dodai.errors import DodaiError

IDK = "I don't know."

# ------------------------------------------------------------------------------------ 1. uncertainty


@dataclass
class TokenUncertainty:
    """Per-token entropy and log-prob of an answer (T ≥ 1 tokens) and their summaries."""

    entropies: list[float]  # H_t in nats, one per answer token
    logprobs: list[float]  # log p_t(y_t), one per answer token

    @property
    def mean_entropy(self) -> float:
        return sum(self.entropies) / len(self.entropies)

    @property
    def max_entropy(self) -> float:
        return max(self.entropies)

    @property
    def min_entropy(self) -> float:
        return min(self.entropies)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs)

    @property
    def min_logprob(self) -> float:
        return min(self.logprobs)

    @property
    def seq_logprob(self) -> float:
        return sum(self.logprobs)

    def summary(self) -> dict:
        return {"mean_entropy": self.mean_entropy, "max_entropy": self.max_entropy,
                "min_entropy": self.min_entropy, "mean_logprob": self.mean_logprob,
                "min_logprob": self.min_logprob, "seq_logprob": self.seq_logprob, "n_tokens": len(self.logprobs)}


def token_uncertainty(logits, token_ids: Sequence[int]) -> TokenUncertainty:
    """Entropy and chosen-token log-prob per position from raw logits (T, V) and the tokens (T,).

    ``logits[t]`` is the model's output *before* token ``token_ids[t]`` (the distribution it was
    drawn from). Computed in float64 with log-softmax, so −p log p is exact where p underflows.
    """
    import torch

    lg = torch.as_tensor(logits)
    if lg.ndim != 2:
        raise DodaiError(f"logits must be (T, V), got shape {tuple(lg.shape)}")
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    if ids.numel() == 0 or lg.shape[0] == 0:
        raise DodaiError("no answer tokens to measure")
    if ids.numel() != lg.shape[0]:
        raise DodaiError(f"{lg.shape[0]} logit rows for {ids.numel()} tokens")
    if int(ids.min()) < 0 or int(ids.max()) >= lg.shape[1]:
        raise DodaiError(f"a token id is outside the vocabulary of {lg.shape[1]}")
    if torch.isnan(lg).any() or (lg == math.inf).any():
        raise DodaiError("the logits hold NaN or +infinity")
    if (lg.amax(dim=-1) == -math.inf).any():
        raise DodaiError("a logits row is entirely −infinity")
    logp = lg.double().log_softmax(dim=-1)  # (T, V)
    # H_t = −Σ p log p, with 0 · log 0 = 0 for masked (−inf) logits
    ent = -torch.where(logp > -math.inf, logp.exp() * logp, torch.zeros_like(logp)).sum(dim=-1)  # (T,)
    chosen = logp.gather(1, ids[:, None])[:, 0]  # (T,)
    return TokenUncertainty(ent.tolist(), chosen.tolist())


def score_continuation(model, prompt_ids: Sequence[int], answer_ids: Sequence[int]):
    """Logits (T, V) that ``model`` gives before each answer token: one forward over prompt + answer.

    Teacher forcing: position ``len(prompt) − 1 + t`` predicts answer token t, so the rows equal the
    logits a step-by-step greedy decoder saw (tests/test_safety_hallucination.py checks this against
    the engine's reported log-probs).
    """
    import torch

    prompt, answer = list(prompt_ids), list(answer_ids)
    if not prompt:
        raise DodaiError("the prompt is empty")
    if not answer:
        raise DodaiError("no answer tokens to score")
    if len(prompt) + len(answer) > model.config.block_size:
        raise DodaiError(f"prompt + answer ({len(prompt) + len(answer)} tokens) exceed the model's context "
                         f"of {model.config.block_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits, _ = model(torch.tensor([prompt + answer[:-1]], device=device))  # (1, P+T−1, V)
    finally:
        model.train(was_training)
    return logits[0, len(prompt) - 1:].float().cpu()  # (T, V)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def fold(text: str) -> str:
    """Lowercase, accents removed (Bogotá → bogota), any string accepted (lone surrogates replaced)."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation (Rajpurkar et al. 2016): folded, punctuation and articles dropped."""
    t = _PUNCT.sub(" ", fold(text))
    return " ".join(_ARTICLES.sub(" ", t).split())


def is_correct(answer: str, gold: str) -> bool:
    """The normalised gold answer occurs as a whole-word sequence in the normalised answer."""
    g, a = normalize_answer(gold).split(), normalize_answer(answer).split()
    if not g:
        raise DodaiError("the gold answer is empty")
    return any(a[i:i + len(g)] == g for i in range(len(a) - len(g) + 1))


def agreement(samples: Sequence[str], reference: str) -> float:
    """Self-consistency: the share of ``samples`` whose normalised text equals the reference's."""
    if not samples:
        raise DodaiError("self-consistency needs at least one sample")
    ref = normalize_answer(reference)
    return sum(normalize_answer(s) == ref for s in samples) / len(samples)


@dataclass
class UncertainAnswer:
    """A greedy answer with its uncertainty; ``samples`` are the self-consistency draws."""

    text: str
    ids: list[int]  # the generated ids the uncertainty is measured on (the answer's tokens)
    uncertainty: TokenUncertainty
    samples: list[str] = field(default_factory=list)
    agreement: float | None = None

    def signals(self) -> dict[str, float]:
        """Every confidence signal, oriented so that higher means more confident."""
        u = self.uncertainty
        out = {"neg_mean_entropy": -u.mean_entropy, "neg_max_entropy": -u.max_entropy,
               "mean_logprob": u.mean_logprob, "min_logprob": u.min_logprob, "seq_logprob": u.seq_logprob}
        if self.agreement is not None:
            out["self_consistency"] = self.agreement
        return out


def _answer_span(tokenizer, ids: list[int], text: str) -> int:
    """The number of leading ``ids`` that spell the (cut) answer ``text``: at least 1."""
    want = len(text.rstrip())
    for k in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:k]).rstrip()) >= want:
            return k
    return len(ids)


def answer_with_uncertainty(model, tokenizer, prompt_ids: Sequence[int], max_new_tokens: int = 12,
                            stop_strings: Sequence[str] = (".", "\n"), stop_tokens: Sequence[int] = (),
                            num_samples: int = 0, seed: int = 0) -> UncertainAnswer:
    """Greedy answer (cut at the first stop string), its token uncertainty, and optional samples.

    The uncertainty covers the tokens that spell the answer text (a token that completes a stop string
    is left out unless it also carries answer characters), at least one token. ``num_samples`` > 0
    draws that many answers at temperature 1 (one batched call, seeded) for self-consistency.
    """
    from dodai.generate.engine import complete
    from dodai.generate.processors import LogitsPipeline

    eos = getattr(tokenizer, "eos_id", None)
    out = complete(model, prompt_ids, max_new_tokens, LogitsPipeline(temperature=0.0), eos_id=eos,
                   stop_tokens=stop_tokens, stop_strings=stop_strings, tokenizer=tokenizer)[0]
    ids = out.ids[:-1] if out.finish_reason == "eos" and len(out.ids) > 1 else out.ids
    if not ids:
        raise DodaiError("the model generated no tokens (max_new_tokens must be >= 1)")
    k = _answer_span(tokenizer, ids, out.text)
    ids = ids[:k]
    u = token_uncertainty(score_continuation(model, prompt_ids, ids), ids)
    ans = UncertainAnswer(out.text.strip(), ids, u)
    if num_samples > 0:
        draws = complete(model, prompt_ids, max_new_tokens, LogitsPipeline(temperature=1.0), seed=seed,
                         num_samples=num_samples, eos_id=eos, stop_tokens=stop_tokens, stop_strings=stop_strings,
                         tokenizer=tokenizer)
        ans.samples = [d.text.strip() for d in draws]
        ans.agreement = agreement(ans.samples, ans.text)
    return ans


# ------------------------------------------------------------------------------------ 2. abstention


def _check_pairs(conf: Sequence[float], correct: Sequence[bool]) -> tuple[list[float], list[bool]]:
    c, y = [float(x) for x in conf], [bool(x) for x in correct]
    if len(c) != len(y):
        raise DodaiError(f"{len(c)} confidences for {len(y)} labels")
    if not c:
        raise DodaiError("no answers to score")
    if any(math.isnan(x) for x in c):
        raise DodaiError("a confidence is NaN")
    return c, y


def auroc(conf: Sequence[float], correct: Sequence[bool]) -> float:
    """Area under the ROC curve of ``conf`` for predicting ``correct``: P(conf⁺ > conf⁻) + ½ P(tie).

    Mann–Whitney form: (Σ ranks of the positives − n⁺(n⁺+1)/2) / (n⁺ n⁻), tied values get their
    average rank. 0.5 = no better than chance.
    """
    c, y = _check_pairs(conf, correct)
    n_pos = sum(y)
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DodaiError("AUROC needs both correct and wrong answers")
    order = sorted(range(len(c)), key=lambda i: c[i])
    ranks = [0.0] * len(c)
    i = 0
    while i < len(order):  # a run of equal values shares the mean of its 1-based ranks
        j = i
        while j + 1 < len(order) and c[order[j + 1]] == c[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = sum(r for r, t in zip(ranks, y) if t)
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def risk_coverage(conf: Sequence[float], correct: Sequence[bool]) -> dict:
    """Risk–coverage curve: answer the most confident first; tied confidences enter together.

    Returns ``coverage`` and ``risk`` (error rate among the answered) at each distinct threshold,
    highest first, the matching ``thresholds``, and ``aurc`` — the mean risk over the n coverage
    levels k/n (ties spread evenly), lower is better.
    """
    c, y = _check_pairs(conf, correct)
    n = len(c)
    order = sorted(range(n), key=lambda i: -c[i])
    cov, risk, thr = [], [], []
    errors = answered = 0
    per_k = []  # risk at coverage k/n for k = 1..n, ties share their group's mean error
    i = 0
    while i < n:
        j = i
        while j + 1 < n and c[order[j + 1]] == c[order[i]]:
            j += 1
        group = [order[m] for m in range(i, j + 1)]
        g_err = sum(not y[m] for m in group)
        for t in range(1, len(group) + 1):  # expected errors when a random part of the tie is answered
            per_k.append((errors + g_err * t / len(group)) / (answered + t))
        errors += g_err
        answered += len(group)
        cov.append(answered / n)
        risk.append(errors / answered)
        thr.append(c[order[i]])
        i = j + 1
    return {"coverage": cov, "risk": risk, "thresholds": thr, "aurc": sum(per_k) / n}


def choose_threshold(conf: Sequence[float], correct: Sequence[bool], wrong_cost: float = 1.0) -> float:
    """The threshold (answer when conf ≥ it) that maximises Σ answered (+1 correct, −wrong_cost wrong).

    Candidates are midpoints between consecutive distinct confidences (and ±infinity for "answer
    all" / "answer none"), so the chosen cut does not sit on a dev example. Ties in utility go to the
    lower threshold (more answers).
    """
    c, y = _check_pairs(conf, correct)
    if wrong_cost < 0:
        raise DodaiError(f"wrong_cost must be >= 0, got {wrong_cost}")
    vals = sorted(set(c), reverse=True)
    cuts = [math.inf] + [(a + b) / 2 for a, b in zip(vals, vals[1:])] + [-math.inf]
    best, best_u = math.inf, 0.0  # answering nothing has utility 0
    for t in cuts[1:]:
        u = sum(1.0 if ok else -wrong_cost for x, ok in zip(c, y) if x >= t)
        if u >= best_u:
            best, best_u = t, u
    return best


def abstain(text: str, conf: float, threshold: float) -> tuple[str, bool]:
    """(the answer, False) when ``conf`` ≥ ``threshold``, else (IDK, True)."""
    if math.isnan(conf):
        return IDK, True
    return (text, False) if conf >= threshold else (IDK, True)


def selective_metrics(conf: Sequence[float], correct: Sequence[bool], threshold: float) -> dict:
    """Coverage, accuracy of the answered, utility and TruthfulQA-style "truthful" rate at a threshold.

    A truthful reply is a correct answer or an abstention (Lin et al. 2022, "TruthfulQA": "I have no
    comment" is truthful but uninformative).
    """
    c, y = _check_pairs(conf, correct)
    ans = [ok for x, ok in zip(c, y) if x >= threshold]
    n = len(c)
    right = sum(ans)
    return {"n": n, "coverage": len(ans) / n, "answered": len(ans),
            "selective_accuracy": right / len(ans) if ans else float("nan"),
            "accuracy_all": sum(y) / n, "wrong_rate": (len(ans) - right) / n,
            "truthful": (right + n - len(ans)) / n, "utility": (right - (len(ans) - right)) / n}


# ------------------------------------------------------------------------------------ 3. grounding

MAX_ANSWER_CHARS = 20_000
MAX_SOURCE_CHARS = 2_000_000
MAX_SOURCE_SENTENCES = 4_000  # for the embedding check: each is embedded once

_STOP = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either else few for from further had
has have having he her here hers him his how i if in into is it its itself just let may me might more
most must my neither no nor not now of off on once only or other our ours out over own same shall she
should so some such than that the their theirs them then there these they this those through to too
under until up upon very was we were what when where which while who whom why will with would you your
yours one ones given returns return returned using use used get gets also etc e g ie eg
""".split())
# "one" is left out: far more often a pronoun ("the first one") than a count
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if w != "one"}
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_NUM = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?![\w])")
# names: dotted or underscored identifiers, calls, CamelCase, and capitalised words inside a sentence
_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\b|\b[A-Za-z0-9]*_[A-Za-z0-9_]*\b"
                    r"|\b[A-Za-z_][A-Za-z0-9_]*(?=\()|\b[a-z]+[A-Z]\w*\b|\b[A-Z][a-z0-9]+[A-Z]\w*\b")
_CAP = re.compile(r"\b[A-Z][\w'’-]*")
_IDK = re.compile(r"^\W*I\s+(?:do not|don't|don’t)\s+know\W*$", re.IGNORECASE)
_CITATION = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
_ATTRIBUTION = re.compile(r"^\s*(?:according to|as stated in|based on)\s+(?:the\s+)?sources?\s*"
                          r"(?:\[[\d,\s]*\]\s*)*[,:]?\s*", re.IGNORECASE)


def _clean(text: str) -> str:
    if not isinstance(text, str):
        raise DodaiError(f"expected text, got {type(text).__name__}")
    return text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates → "?": any str is accepted


def _stem(w: str) -> str:
    """A crude suffix stripper so 'returns'/'returned'/'returning' meet 'return' (no dictionary)."""
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[:-len(suf)]
    return w


def content_words(text: str) -> list[str]:
    """Stemmed, folded words of ``text`` that carry content (no stop words, no 1-letter words)."""
    out = []
    for m in _WORD.finditer(fold(text)):
        w = m.group().replace("’", "'").split("'")[0]
        if len(w) > 1 and w not in _STOP and not w.isdigit():
            out.append(_stem(w))
    return out


def _norm_number(s: str) -> str:
    s = s.replace(",", "")
    return s.lstrip("+")


def numbers(text: str) -> list[str]:
    """The numbers in ``text`` (digits, and the number words zero…twenty as digits)."""
    out = [_norm_number(m.group()) for m in _NUM.finditer(text)]
    out += [_NUMBER_WORDS[w] for w in _WORD.findall(fold(text)) if w in _NUMBER_WORDS]
    return out


def names(sentence: str) -> list[str]:
    """Name-like tokens of one sentence: identifiers (``os.path``, ``max_len``, ``split(``, CamelCase)
    and capitalised words that do not open the sentence and are not stop words."""
    found = [m.group() for m in _IDENT.finditer(sentence) if any(ch.isalnum() for ch in m.group())]
    body = sentence.lstrip(" \t\"'([*`")
    first = _WORD.match(body)
    skip = first.start() + (len(sentence) - len(body)) if first else -1
    for m in _CAP.finditer(sentence):
        w = m.group().rstrip("'’-")
        if m.start() != skip and fold(w) not in _STOP and len(w) > 1 and fold(w) not in _NUMBER_WORDS:
            found.append(w)
    seen, out = set(), []
    for n in found:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def _present(name: str, folded_source: str) -> bool:
    """``name`` occurs in the (folded) sources as a whole token (not inside a longer identifier)."""
    pat = r"(?<![\w])" + re.escape(fold(name)) + r"(?![\w])"
    return re.search(pat, folded_source) is not None


@dataclass
class SentenceCheck:
    sentence: str
    start: int  # character span in the checked answer text
    end: int
    lexical: float  # share of the sentence's content words found in the sources (1.0 when it has none)
    cosine: float | None  # MiniLM cosine to the best source sentence (None without an encoder)
    best_source: str  # that source sentence ("" without an encoder)
    missing_numbers: list[str]
    missing_names: list[str]
    supported: bool

    @property
    def reasons(self) -> list[str]:
        out = [f"number {n} not in the sources" for n in self.missing_numbers]
        out += [f"name {n} not in the sources" for n in self.missing_names]
        if not self.supported and not out:
            out.append("content not found in the sources")
        return out


@dataclass
class GroundingReport:
    text: str  # the checked text (citations and "According to source [n]," removed)
    sentences: list[SentenceCheck]

    @property
    def unsupported(self) -> list[SentenceCheck]:
        return [s for s in self.sentences if not s.supported]

    @property
    def faithful(self) -> bool:
        """No unsupported sentence (an answer with no claims, e.g. "I don't know", is faithful)."""
        return not self.unsupported

    @property
    def support(self) -> float:
        """The weakest sentence's support score in [0, 1] (1 for no sentences): lower = less grounded."""
        return min((sentence_support(s) for s in self.sentences), default=1.0)


def sentence_support(s: SentenceCheck) -> float:
    """One continuous score per sentence: 0 if a number/name is missing, else max(lexical, cosine)."""
    if s.missing_numbers or s.missing_names:
        return 0.0
    return max(s.lexical, s.cosine if s.cosine is not None else 0.0)


def strip_citations(text: str) -> str:
    """The answer without ``[n]`` citation markers and a leading "According to source [n]," phrase."""
    text = _ATTRIBUTION.sub("", text)
    text = _CITATION.sub("", text)
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


def check_grounding(answer: str, sources: Sequence[str], encoder=None, min_lexical: float = 0.6,
                    min_cosine: float = 0.75) -> GroundingReport:
    """Check every sentence of ``answer`` against ``sources`` (texts); see the module docstring.

    ``encoder``: anything with ``encode(list[str]) -> (N, C)`` unit-norm tensor (dodai's MiniLM
    :class:`~dodai.models.bert.SentenceEncoder`); without it only the lexical checks run. A sentence
    is supported when it has no missing number or name and its lexical overlap ≥ ``min_lexical`` or
    its cosine ≥ ``min_cosine``.
    """
    from dodai.rag.chunk import sentences as split_sentences

    answer = _clean(answer)
    if isinstance(sources, str):
        sources = [sources]
    sources = [_clean(s) for s in sources]
    if len(answer) > MAX_ANSWER_CHARS:
        raise DodaiError(f"the answer has {len(answer):,} characters; the checker takes at most {MAX_ANSWER_CHARS:,}")
    if sum(len(s) for s in sources) > MAX_SOURCE_CHARS:
        raise DodaiError(f"the sources exceed {MAX_SOURCE_CHARS:,} characters; pass the cited ones only")
    if not 0 <= min_lexical <= 1:
        raise DodaiError(f"min_lexical must be in [0, 1], got {min_lexical}")
    text = strip_citations(answer)
    spans = split_sentences(text)
    joined = "\n".join(sources)
    folded = fold(joined)
    src_words = set(content_words(joined))
    src_numbers = set(numbers(joined))
    src_sents = [joined[a:b] for a, b in split_sentences(joined)]
    sims = None
    if encoder is not None and spans and src_sents:
        if len(src_sents) > MAX_SOURCE_SENTENCES:
            raise DodaiError(f"the sources hold {len(src_sents):,} sentences; the embedding check takes at most "
                             f"{MAX_SOURCE_SENTENCES:,}")
        import torch.nn.functional as F

        a_vec = F.normalize(encoder.encode([text[a:b] for a, b in spans]).float(), dim=-1)  # (S, C)
        s_vec = F.normalize(encoder.encode(src_sents).float(), dim=-1)  # (N, C)
        sims = a_vec @ s_vec.T  # (S, N) cosine
    checks = []
    for i, (a, b) in enumerate(spans):
        sent = text[a:b]
        words = [] if _IDK.search(sent) else content_words(sent)  # "I don't know" claims nothing
        lexical = sum(w in src_words for w in words) / len(words) if words else 1.0
        miss_num = [n for n in dict.fromkeys(numbers(sent)) if n not in src_numbers]
        miss_name = [n for n in names(sent) if not _present(n, folded)]
        cos, best = None, ""
        if sims is not None:
            j = int(sims[i].argmax())
            cos, best = float(sims[i, j]), src_sents[j]
        content_ok = not words or lexical >= min_lexical or (cos is not None and cos >= min_cosine)
        checks.append(SentenceCheck(sent, a, b, lexical, cos, best, miss_num, miss_name,
                                    content_ok and not miss_num and not miss_name))
    return GroundingReport(text, checks)


def check_answer(ans, encoder=None, min_lexical: float = 0.6, min_cosine: float = 0.75) -> GroundingReport:
    """Check a :class:`dodai.rag.answer.Answer` against the sources it cites (all shown ones if none).

    An abstention has nothing to check (an empty, faithful report).
    """
    if ans.abstained:
        return GroundingReport(strip_citations(ans.text), [])
    hits = ans.cited_sources() if ans.citations else list(ans.sources)
    if not hits:
        return check_grounding(ans.text, [""], encoder, min_lexical, min_cosine)
    return check_grounding(ans.text, [h.chunk.text for h in hits], encoder, min_lexical, min_cosine)


# ------------------------------------------------------------------------------------ the fact set

GENSIM_WHEEL = "gensim==4.4.0"
QW_PATH = "gensim/test/test_data/questions-words.txt"
QW_SHA256 = "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"
# section of questions-words.txt → (question, answer stem the reply starts with); {} = the subject
RELATIONS = {
    "capital": ("What is the capital of {}?", "The capital of {} is"),
    "currency": ("What is the currency of {}?", "The currency of {} is the"),
    "state": ("In which U.S. state is the city of {}?", "{} is in the state of"),
}
_SECTIONS = {"capital-common-countries": "capital", "capital-world": "capital", "currency": "currency",
             "city-in-state": "state"}


@dataclass(frozen=True, order=True)
class Fact:
    relation: str  # "capital", "currency" or "state"
    subject: str  # Greece
    answer: str  # Athens

    @property
    def question(self) -> str:
        return RELATIONS[self.relation][0].format(self.subject)

    @property
    def stem(self) -> str:
        return RELATIONS[self.relation][1].format(self.subject)

    @property
    def split(self) -> str:
        """"dev" or "test", fixed by SHA-256 of the question (half each, independent of file order)."""
        return "dev" if hashlib.sha256(self.question.encode()).digest()[0] % 2 == 0 else "test"


def parse_questions_words(text: str) -> list[Fact]:
    """Facts from the analogy file: each line ``a b c d`` holds two pairs (a, b) and (c, d).

    capital sections are (capital, country), currency is (country, currency), city-in-state is
    (city, state). A subject seen with two different answers (an ambiguous label) is dropped; facts
    are sorted by relation and subject.
    """
    seen: dict[tuple[str, str], set[str]] = {}
    rel = None
    for line in text.splitlines():
        if line.startswith(":"):
            rel = _SECTIONS.get(line[1:].strip())
            continue
        parts = line.split()
        if rel is None or len(parts) != 4:
            continue
        for x, y in ((parts[0], parts[1]), (parts[2], parts[3])):
            subj, ans = (y, x) if rel == "capital" else (x, y)
            seen.setdefault((rel, subj.replace("_", " ")), set()).add(ans.replace("_", " "))
    return sorted(Fact(r, s, next(iter(a))) for (r, s), a in seen.items() if len(a) == 1)


def questions_words_path() -> Path:
    """``questions-words.txt`` in the cache, extracted from gensim's wheel on first use."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    from dodai.io import atomic_write_bytes
    from dodai.paths import cache_dir

    out = cache_dir() / "corpora" / "questions-words.txt"
    if out.is_file() and hashlib.sha256(out.read_bytes()).hexdigest() == QW_SHA256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gensim.") as tmp:
        try:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                "--disable-pip-version-check", "-q", "-d", tmp, GENSIM_WHEEL],
                               capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DodaiError(f"could not run pip to fetch {GENSIM_WHEEL}: {e}") from None
        wheels = sorted(Path(tmp).glob("gensim-*.whl"))
        if r.returncode != 0 or not wheels:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise DodaiError(f"pip could not download {GENSIM_WHEEL} ({last}); check network access to PyPI")
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                data = z.read(QW_PATH)
        except (KeyError, zipfile.BadZipFile) as e:
            raise DodaiError(f"{wheels[0].name}: cannot read {QW_PATH} ({e})") from None
    if hashlib.sha256(data).hexdigest() != QW_SHA256:
        raise DodaiError(f"{QW_PATH} in {GENSIM_WHEEL} has an unexpected sha256")
    atomic_write_bytes(out, data)
    return out


def load_fact_set() -> list[Fact]:
    """The 213 capital/currency/U.S.-state facts (see the module docstring), fetched on first use."""
    return parse_questions_words(questions_words_path().read_text(encoding="utf-8"))
