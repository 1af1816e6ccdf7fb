"""A rule-generated task with a measurable skill: free-form English dates → ISO-8601 JSON.

The user message is a date written in one of several human styles ("March 5, 2021", "5th of March
2021", "2021, Mar 5", "the 5th day of March in 2021" …); the one correct reply is the JSON object
``{"date": "2021-03-05"}``. Every style names the month in words, so no input is ambiguous
(no 03/05 vs 05/03 question). The checker is exact: the reply must parse as JSON, be an object with
the single key ``date``, and hold the right ISO string.

The **judge** encodes a hidden "human" preference used only to label preference pairs and to
evaluate (the policy never sees it): correct beats wrong, valid JSON beats prose, then shorter
beats longer. :func:`judge_score` turns that into a number in [0, 1].
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS_IN = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
SYSTEM = "Convert the date to JSON."


def _ordinal(d: int) -> str:
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


STYLES = [
    lambda y, m, d: f"{MONTHS[m - 1]} {d}, {y}",
    lambda y, m, d: f"{d} {MONTHS[m - 1]} {y}",
    lambda y, m, d: f"{_ordinal(d)} of {MONTHS[m - 1]}, {y}",
    lambda y, m, d: f"{MONTHS[m - 1][:3]} {d} {y}",
    lambda y, m, d: f"{y}, {MONTHS[m - 1]} {_ordinal(d)}",
    lambda y, m, d: f"{d}-{MONTHS[m - 1][:3]}-{y}",
    lambda y, m, d: f"the {_ordinal(d)} day of {MONTHS[m - 1]} in {y}",
]


@dataclass
class DateExample:
    text: str  # the free-form date (the user message)
    iso: str  # YYYY-MM-DD

    @property
    def answer(self) -> str:
        return iso_json(self.iso)

    def messages(self, with_answer: bool = True) -> list[dict]:
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.text}]
        if with_answer:
            msgs.append({"role": "assistant", "content": self.answer})
        return msgs


def iso_json(iso: str) -> str:
    return json.dumps({"date": iso})


def make_dates(n: int, seed: int, years: tuple[int, int] = (1950, 2049)) -> list[DateExample]:
    """``n`` random dates in random styles (a leap day is never drawn: Feb has 28 days here)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.randint(*years)
        m = rng.randint(1, 12)
        d = rng.randint(1, DAYS_IN[m - 1])
        out.append(DateExample(rng.choice(STYLES)(y, m, d), f"{y:04d}-{m:02d}-{d:02d}"))
    return out


def split(n_train: int, n_test: int, seed: int = 0) -> tuple[list[DateExample], list[DateExample]]:
    """Disjoint train / held-out sets: held-out ISO dates never occur in the training set."""
    test = make_dates(n_test, seed + 1_000_003)
    seen = {e.iso for e in test}
    train: list[DateExample] = []
    k = 0
    while len(train) < n_train:
        batch = make_dates(n_train, seed + k)
        train += [e for e in batch if e.iso not in seen][: n_train - len(train)]
        k += 1
    return train, test


def parse_reply(reply: str) -> str | None:
    """The ISO string of a reply that is exactly ``{"date": "..."}`` (whitespace around allowed), else None."""
    try:
        obj = json.loads(reply.strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"date"} or not isinstance(obj["date"], str):
        return None
    return obj["date"]


def is_correct(reply: str, ex: DateExample) -> bool:
    """The exact checker."""
    return parse_reply(reply) == ex.iso


def judge_score(reply: str, ex: DateExample) -> float:
    """Hidden preference in [0, 1]: 0.6 for the right date anywhere in the reply, 0.3 more if the reply
    is exactly the JSON object, and 0.1 · (shortness) — correct > formatted > concise."""
    s = 0.0
    if ex.iso in reply:
        s += 0.6
    if parse_reply(reply) is not None:
        s += 0.3
    s += 0.1 * max(0.0, 1.0 - max(0, len(reply) - len(ex.answer)) / 60)
    return s


def judge_prefers(a: str, b: str, ex: DateExample) -> bool:
    """True when the judge prefers reply ``a`` to reply ``b`` (ties: False)."""
    return judge_score(a, ex) > judge_score(b, ex)


def corruptions(ex: DateExample, rng: random.Random) -> list[str]:
    """Plausible wrong or worse replies to ``ex`` (used to build preference pairs)."""
    y, m, d = (int(p) for p in ex.iso.split("-"))
    d2 = d % 28 + 1
    m2 = m % 12 + 1
    return [
        iso_json(f"{y:04d}-{m:02d}-{d2:02d}"),  # wrong day
        iso_json(f"{y:04d}-{m2:02d}-{min(d, 28):02d}"),  # wrong month
        iso_json(f"{y:04d}-{d:02d}-{m:02d}") if d <= 12 and d != m else iso_json(f"{y + 1:04d}-{m:02d}-{d:02d}"),
        f"The date is {ex.iso}.",  # right date, prose
        f"{ex.iso}",  # right date, not JSON
        f"Sure! Here is the date in JSON: {ex.answer}",  # right, verbose
        f"{m:02d}/{d:02d}/{y:04d}",  # wrong format
    ]


def preference_pairs(examples: list[DateExample], seed: int = 0) -> list[tuple[DateExample, str, str]]:
    """(example, chosen, rejected) pairs: two candidates per prompt, labelled by the judge only.

    Candidates are the correct reply and the corruptions; a pair where the judge sees a tie is dropped.
    """
    rng = random.Random(seed)
    pairs = []
    for ex in examples:
        cands = [ex.answer] + corruptions(ex, rng)
        a, b = rng.sample(cands, 2)
        if judge_prefers(a, b, ex):
            pairs.append((ex, a, b))
        elif judge_prefers(b, a, ex):
            pairs.append((ex, b, a))
    return pairs


def tiny_model_and_tokenizer(seed: int = 0, n_layer: int = 2, n_embd: int = 64, vocab_size: int = 400):
    """A tiny random Llama and a byte-level BPE trained on the task's own text with ChatML specials:
    what quick modes and tests fine-tune (seconds, not minutes). The tokenizer's end token is <|im_end|>."""
    import torch

    from dodai.generate.session import CHATML
    from dodai.models.llama import Llama, LlamaConfig
    from dodai.tokenizers.bpe import ByteLevelBPE

    text = "".join(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{e.text}<|im_end|>\n"
                   f"<|im_start|>assistant\n{e.answer}<|im_end|>\n" for e in make_dates(400, seed + 7))
    tok = ByteLevelBPE.train(text, vocab_size, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tok.eos_id = tok.special_tokens["<|im_end|>"]
    tok.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=n_layer, n_embd=n_embd, n_head=4,
                      n_kv_head=2, ffn_hidden=2 * n_embd, tie_embeddings=True)
    return Llama(cfg).eval(), tok


def verifiable_reward(reply: str, ex: DateExample) -> float:
    """GRPO's reward, computed from the known answer alone (no model, no judge): 1 for the exact answer,
    else half the character similarity to it (difflib's ratio, 2·matches / total length), so that a
    reply with the right shape already earns something."""
    if is_correct(reply, ex):
        return 1.0
    import difflib

    return 0.5 * difflib.SequenceMatcher(None, reply.strip(), ex.answer, autojunk=False).ratio()
