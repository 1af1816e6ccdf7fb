"""The roadmap index: every item of the seed roadmap (R1.1 ... R9.3), where dodai implements it, the command
that demonstrates it, and whether it works — a status *derived* from committed evidence, never typed by hand.

The contract is ../shared/ROADMAP.md. An item is **working** when all of these hold:

1. its experiment is registered (:data:`dodai.experiments.EXPERIMENTS`);
2. its evidence is committed: ``evidence/<ID>/results.json`` of a run of that experiment (R6.4 shares R4.3's);
3. it has claims (:mod:`dodai.claims`) and every one of them holds on that evidence;
4. tests exist for it: a ``tests/test_*.py`` that names the item or its experiment module.

Otherwise it is **failing** (a claim does not hold on the evidence), **unverified** (no evidence, no claims or
no tests found) or **planned** (no experiment). :func:`evaluate` returns the reasons, the evidence path and mode
(quick or full run) and each claim with its measured values; ``dodai roadmap --json`` prints them.

The evidence and tests folders are those of the source checkout (``$DODAI_EVIDENCE`` overrides the evidence
folder): an installed wheel without them reports its items as unverified rather than claim what it cannot show.

An experiment is ``"module:function"``; the function takes ``(out_dir: Path, quick: bool)`` and returns a dict
of results, writing report.md / results.json / PNGs into ``out_dir``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

WORKING = "working"
FAILING = "failing"
UNVERIFIED = "unverified"
PLANNED = "planned"

ROOT = Path(__file__).resolve().parent.parent  # the source checkout holding dodai/, tests/, evidence/
# Items whose experiment is another item's: their evidence is that item's folder.
EVIDENCE_OF = {"R6.4": "R4.3"}


@dataclass(frozen=True)
class Item:
    id: str
    ja: str  # the seed's own Japanese label
    en: str
    module: str  # where the library code lives
    command: str  # the command that demonstrates it

    @property
    def status(self) -> str:
        return evaluate(self.id)["status"]


def _run(i: str) -> str:
    return f"dodai roadmap run {i}"


ITEMS: list[Item] = [
    # 1. 数理・基礎概念
    Item("R1.1", "確率・統計", "Probability & statistics: n-gram LMs, likelihood, cross-entropy",
         "dodai.basics.ngram", _run("R1.1")),
    Item("R1.2", "線形代数", "Linear algebra: eigenvalues, SVD, PCA, low-rank compression",
         "dodai.basics.linalg", _run("R1.2")),
    Item("R1.3", "微積分・最適化", "Calculus & optimization: autograd from scratch, SGD/Adam/AdamW",
         "dodai.basics.autograd", _run("R1.3")),
    Item("R1.4", "情報理論", "Information theory: entropy, KL, perplexity, bits per byte",
         "dodai.info", _run("R1.4")),
    Item("R1.5", "分布表現", "Distributed representations: Word2Vec (skip-gram, CBOW)",
         "dodai.embeddings.word2vec", _run("R1.5")),
    # 2. ニューラルネットワーク基礎
    Item("R2.1", "パーセプトロン", "Perceptron: Rosenblatt's rule, XOR, MLP",
         "dodai.basics.perceptron", _run("R2.1")),
    Item("R2.2", "活性化関数", "Activations: ReLU, Softmax, GELU, SiLU (numerically stable)",
         "dodai.basics.autograd", _run("R2.2")),
    Item("R2.3", "損失関数", "Losses: cross-entropy, MSE",
         "dodai.basics.autograd", _run("R2.3")),
    Item("R2.4", "トレーニング", "Training: mini-batches, regularization, overfitting",
         "dodai.basics.mlp", _run("R2.4")),
    # 3. RNN → Transformer
    Item("R3.1", "RNN（長期依存性の課題）", "RNN and the long-term dependency problem",
         "dodai.models.rnn", _run("R3.1")),
    Item("R3.2", "LSTM / GRU", "LSTM / GRU: gates that remember",
         "dodai.models.rnn", _run("R3.2")),
    Item("R3.3", "Seq2Seq + Attention", "Seq2Seq with Bahdanau and Luong attention",
         "dodai.models.seq2seq", _run("R3.3")),
    Item("R3.4", "Transformer（BERT, GPT）", "RNN vs LSTM vs GRU vs Transformer at equal budget",
         "dodai.models.gpt", _run("R3.4")),
    # 4. Transformerの中核概念
    Item("R4.1", "Self-Attention", "Self-attention, Q/K/V: reference and fast path",
         "dodai.nn.attention", _run("R4.1")),
    Item("R4.2", "Multi-Head Attention", "Multi-head attention, GQA/MQA",
         "dodai.nn.attention", _run("R4.2")),
    Item("R4.3", "Positional Encoding", "Positional encoding: sinusoidal, learned, RoPE, ALiBi",
         "dodai.nn.position", _run("R4.3")),
    Item("R4.4", "FFN (Feed Forward Network)", "Feed-forward network: GELU MLP, SwiGLU",
         "dodai.nn.ffn", _run("R4.4")),
    Item("R4.5", "Layer Norm / Residual", "LayerNorm / RMSNorm, residuals, pre-LN vs post-LN",
         "dodai.nn.norm", _run("R4.5")),
    Item("R4.6", "Tokenization", "Tokenization: byte-level BPE, WordPiece, Unigram (SentencePiece)",
         "dodai.tokenizers", _run("R4.6")),
    # 5. 言語モデルの学習と推論
    Item("R5.1", "Pre-training", "Pre-training a GPT on a real corpus",
         "dodai.train.trainer", "dodai speedrun"),
    Item("R5.2", "Fine-tuning", "Fine-tuning: full and LoRA SFT, classifier fine-tuning",
         "dodai.finetune.sft", _run("R5.2")),
    Item("R5.3", "RLHF", "RLHF: reward model, PPO, DPO, GRPO",
         "dodai.finetune.ppo", _run("R5.3")),
    Item("R5.4", "推論（greedy / sampling / beam search）", "Inference: greedy, sampling, beam search",
         "dodai.generate.sampling", _run("R5.4")),
    Item("R5.5", "KV Cache", "KV cache: the key to fast inference",
         "dodai.nn.kv_cache", _run("R5.5")),
    # 6. 実用アーキテクチャと代表モデル
    Item("R6.1", "Encoder型（BERT）", "Encoder: BERT, real all-MiniLM-L6-v2 weights",
         "dodai.models.bert", _run("R6.1")),
    Item("R6.2", "Decoder型（GPT）", "Decoder: GPT-2 and Llama, real SmolLM2-135M-Instruct weights",
         "dodai.models.llama", "dodai chat --model smollm2-135m-instruct"),
    Item("R6.3", "Encoder-Decoder型（T5、FLAN）", "Encoder-decoder: T5 and FLAN instruction tuning",
         "dodai.models.t5", _run("R6.3")),
    Item("R6.4", "ALiBi/RoPEなどPE", "ALiBi / RoPE: position representations",
         "dodai.nn.position", _run("R6.4")),
    Item("R6.5", "Sparse Attention（Longformer、Mistral）", "Sparse attention: sliding window, local+global",
         "dodai.nn.sparse", _run("R6.5")),
    # 7. LLMに付随する技術領域
    Item("R7.1", "Retrieval (RAG)", "Retrieval-augmented generation", "dodai.rag", _run("R7.1")),
    Item("R7.2", "Prompt Engineering", "Prompt engineering, constrained decoding",
         "dodai.prompting", _run("R7.2")),
    Item("R7.3", "Agent", "Agents: a ReAct / function-calling loop", "dodai.agents", _run("R7.3")),
    Item("R7.4", "Memory機構", "Memory: buffer, summaries, vector memory", "dodai.memory",
         _run("R7.4")),
    Item("R7.5", "Tool Use", "Tool use: calculator, sandboxed Python, SQL, search", "dodai.tools",
         _run("R7.5")),
    # 8. セキュリティ・倫理
    Item("R8.1", "Hallucination", "Hallucination: grounding checks, uncertainty, abstention",
         "dodai.safety.hallucination", _run("R8.1")),
    Item("R8.2", "Jailbreak", "Jailbreak: guards and an offline red-team suite", "dodai.safety.guards",
         _run("R8.2")),
    Item("R8.3", "データバイアス", "Data bias: WEAT/SEAT, counterfactual tests, BBQ", "dodai.safety.bias",
         _run("R8.3")),
    # おすすめ深堀り順 / ロードマップ
    Item("R9.1", "Self-Attentionを式レベルで理解", "Self-attention at the level of equations",
         "docs/", _run("R9.1")),
    Item("R9.2", "Multi-modal拡張（VLM）", "A small vision-language model", "dodai.models.vlm",
         _run("R9.2")),
    Item("R9.3", "入門 / 構造理解 / 実践", "The three steps: the roadmap index with live demos",
         "dodai.site", "dodai roadmap page --quick"),
]


def get(item_id: str) -> Item:
    from dodai.errors import DodaiError

    for it in ITEMS:
        if it.id == item_id.upper():
            return it
    raise DodaiError(f"unknown roadmap item {item_id!r}; `dodai roadmap` lists R1.1 ... R9.3")


def evidence_dir() -> Path:
    return Path(os.environ.get("DODAI_EVIDENCE") or ROOT / "evidence")


def evidence_path(item_id: str) -> Path:
    return evidence_dir() / EVIDENCE_OF.get(item_id, item_id)


def load_evidence(item_id: str) -> dict | None:
    f = evidence_path(item_id) / "results.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def evidence_meta(results: dict) -> dict:
    """The provenance block: ``meta`` (dodai.report) or an older hand-written ``provenance``."""
    meta = results.get("meta")
    if isinstance(meta, dict):
        return meta
    prov = results.get("provenance")
    if isinstance(prov, dict):
        machine = prov.get("machine", {})
        return {"command": prov.get("command"), "mode": "quick" if results.get("quick") else "full",
                "date": prov.get("ended_utc") or prov.get("started_utc"), "cpu_model": machine.get("cpu_model"),
                "load_average_start": machine.get("load_average_start"), "wall_s": prov.get("wall_time_s"),
                "versions": prov.get("versions")}
    return {"mode": "quick" if results.get("quick") else None}


@functools.lru_cache(maxsize=1)
def _test_sources() -> dict[str, str]:
    out = {}
    for f in sorted((ROOT / "tests").glob("test_*.py")):
        try:
            out[f"tests/{f.name}"] = f.read_text(encoding="utf-8")
        except OSError:
            continue
    return out


def tests_for(item_id: str) -> list[str]:
    """Test files that name the item (``"R4.3"``) or import its experiment module (``r4_3``)."""
    from dodai.experiments import EXPERIMENTS

    pats = [re.escape(f'"{item_id}"'), re.escape(f"'{item_id}'")]
    target = EXPERIMENTS.get(item_id)
    if target:
        mod = target.split(":")[0].rsplit(".", 1)[-1]
        pats.append(rf"\b{mod}\b")
    rx = re.compile("|".join(pats))
    return [name for name, src in _test_sources().items() if rx.search(src)]


def evaluate(item_id: str) -> dict:
    """Status of one item, derived: experiment, evidence (path, mode, date), claims with measured values, tests."""
    from dodai.claims import CLAIMS
    from dodai.experiments import EXPERIMENTS

    ev_id = EVIDENCE_OF.get(item_id, item_id)
    out: dict = {"experiment": EXPERIMENTS.get(item_id), "evidence": None, "claims": [], "tests": [],
                 "reasons": []}
    if out["experiment"] is None:
        out["status"] = PLANNED
        out["reasons"].append("no experiment registered")
        return out
    res = load_evidence(item_id)
    if res is None:
        out["reasons"].append(f"no committed evidence (evidence/{ev_id}/results.json)")
    else:
        meta = evidence_meta(res)
        folder = evidence_path(item_id)
        out["evidence"] = {"path": f"evidence/{ev_id}", "results": f"evidence/{ev_id}/results.json",
                           "report": f"evidence/{ev_id}/report.md" if (folder / "report.md").is_file() else None,
                           "plots": sorted(f"evidence/{ev_id}/{p.name}" for p in folder.glob("*.png")),
                           "mode": meta.get("mode"), "date": meta.get("date"), "command": meta.get("command"),
                           "cpu_model": meta.get("cpu_model"), "load_average_start": meta.get("load_average_start"),
                           "wall_s": meta.get("process_wall_s") or meta.get("wall_s")}
        claims = CLAIMS.get(ev_id, []) + (CLAIMS.get(item_id, []) if ev_id != item_id else [])
        out["claims"] = [c.evaluate(res) for c in claims]
        if not out["claims"]:
            out["reasons"].append("no claims defined in dodai/claims.py")
        failed = [c["claim"] for c in out["claims"] if not c["holds"]]
        if failed:
            out["reasons"].append(f"{len(failed)} claim(s) do not hold on the evidence")
    out["tests"] = tests_for(item_id)
    if not out["tests"]:
        out["reasons"].append("no tests/test_*.py names this item or its experiment")
    if res is not None and any(not c["holds"] for c in out["claims"]):
        out["status"] = FAILING
    elif out["reasons"]:
        out["status"] = UNVERIFIED
    else:
        out["status"] = WORKING
    return out


def as_dicts() -> list[dict]:
    out = []
    for it in ITEMS:
        d = asdict(it)
        d.update(evaluate(it.id))
        out.append(d)
    return out


README_BEGIN = "<!-- roadmap-status:begin (generated by `python scripts/evidence.py --readme`; do not edit) -->"
README_END = "<!-- roadmap-status:end -->"


def _short(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v[:6]) + (", …" if len(v) > 6 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in list(v.items())[:4]) + "}"
    return str(v)


def status_table_markdown() -> str:
    """The README's status table: one row per item, derived (status, evidence, claims, first claim's values)."""
    rows = ["| item | status | evidence | claims holding | first claim's measured values |", "|---|---|---|---|---|"]
    for it in ITEMS:
        e = evaluate(it.id)
        ev = e["evidence"]
        where = f"[{ev['path']}]({ev['results']}) ({ev.get('mode') or '?'})" if ev else "—"
        n = sum(c["holds"] for c in e["claims"])
        first = e["claims"][0] if e["claims"] else None
        vals = ", ".join(f"{k} {_short(v)}" for k, v in list(first["measured"].items())[:4]) if first else ""
        rows.append(f"| {it.id} {it.en.split(':')[0]} | {e['status']} | {where} | {n}/{len(e['claims'])} | "
                    f"{vals.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
