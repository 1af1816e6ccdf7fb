"""The roadmap index: every item of the seed roadmap (R1.1 ... R9.3), where dodai implements it,
the command that demonstrates it, and whether it works yet.

The contract is ../shared/ROADMAP.md. A row is ``working`` only when its library code, its tests
and its experiment exist and pass; everything else is ``planned``. Features register themselves
by editing their row here (one line each), so ``dodai roadmap`` never claims more than the code does.

An experiment is ``"module:function"``; the function takes ``(out_dir: Path, quick: bool)`` and
returns a dict of results, writing report.md / results.json / PNGs into ``out_dir``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WORKING = "working"
PLANNED = "planned"


@dataclass(frozen=True)
class Item:
    id: str
    ja: str  # the seed's own Japanese label
    en: str
    module: str  # where the library code lives
    status: str  # "working" or "planned"
    command: str  # the command that demonstrates it
    experiment: str | None = None  # "module:function" run by `dodai roadmap run ID`


def _run(i: str) -> str:
    return f"dodai roadmap run {i}"


ITEMS: list[Item] = [
    # 1. 数理・基礎概念
    Item("R1.1", "確率・統計", "Probability & statistics: n-gram LMs, likelihood, cross-entropy",
         "dodai.basics.ngram", WORKING, _run("R1.1")),
    Item("R1.2", "線形代数", "Linear algebra: eigenvalues, SVD, PCA, low-rank compression",
         "dodai.basics.linalg", WORKING, _run("R1.2")),
    Item("R1.3", "微積分・最適化", "Calculus & optimization: autograd from scratch, SGD/Adam/AdamW",
         "dodai.basics.autograd", WORKING, _run("R1.3")),
    Item("R1.4", "情報理論", "Information theory: entropy, KL, perplexity, bits per byte",
         "dodai.info", WORKING, _run("R1.4")),
    Item("R1.5", "分布表現", "Distributed representations: Word2Vec (skip-gram, CBOW)",
         "dodai.embeddings.word2vec", WORKING, _run("R1.5")),
    # 2. ニューラルネットワーク基礎
    Item("R2.1", "パーセプトロン", "Perceptron: Rosenblatt's rule, XOR, MLP",
         "dodai.basics.perceptron", WORKING, _run("R2.1")),
    Item("R2.2", "活性化関数", "Activations: ReLU, Softmax, GELU, SiLU (numerically stable)",
         "dodai.basics.autograd", WORKING, _run("R2.2")),
    Item("R2.3", "損失関数", "Losses: cross-entropy, MSE",
         "dodai.basics.autograd", WORKING, _run("R2.3")),
    Item("R2.4", "トレーニング", "Training: mini-batches, regularization, overfitting",
         "dodai.basics.mlp", WORKING, _run("R2.4")),
    # 3. RNN → Transformer
    Item("R3.1", "RNN（長期依存性の課題）", "RNN and the long-term dependency problem",
         "dodai.models.rnn", WORKING, _run("R3.1")),
    Item("R3.2", "LSTM / GRU", "LSTM / GRU: gates that remember",
         "dodai.models.rnn", WORKING, _run("R3.2")),
    Item("R3.3", "Seq2Seq + Attention", "Seq2Seq with Bahdanau and Luong attention",
         "dodai.models.seq2seq", WORKING, _run("R3.3")),
    Item("R3.4", "Transformer（BERT, GPT）", "RNN vs LSTM vs GRU vs Transformer at equal budget",
         "dodai.models.gpt", WORKING, _run("R3.4")),
    # 4. Transformerの中核概念
    Item("R4.1", "Self-Attention", "Self-attention, Q/K/V: reference and fast path",
         "dodai.nn.attention", WORKING, _run("R4.1")),
    Item("R4.2", "Multi-Head Attention", "Multi-head attention, GQA/MQA",
         "dodai.nn.attention", WORKING, _run("R4.2")),
    Item("R4.3", "Positional Encoding", "Positional encoding: sinusoidal, learned, RoPE, ALiBi",
         "dodai.nn.position", WORKING, _run("R4.3")),
    Item("R4.4", "FFN (Feed Forward Network)", "Feed-forward network: GELU MLP, SwiGLU",
         "dodai.nn.ffn", WORKING, _run("R4.4")),
    Item("R4.5", "Layer Norm / Residual", "LayerNorm / RMSNorm, residuals, pre-LN vs post-LN",
         "dodai.nn.norm", WORKING, _run("R4.5")),
    Item("R4.6", "Tokenization", "Tokenization: byte-level BPE, WordPiece, Unigram (SentencePiece)",
         "dodai.tokenizers", WORKING, _run("R4.6")),
    # 5. 言語モデルの学習と推論
    Item("R5.1", "Pre-training", "Pre-training a GPT on a real corpus",
         "dodai.train.trainer", WORKING, "dodai speedrun"),
    Item("R5.2", "Fine-tuning", "Fine-tuning: full and LoRA SFT, classifier fine-tuning",
         "dodai.finetune.sft", WORKING, _run("R5.2")),
    Item("R5.3", "RLHF", "RLHF: reward model, PPO, DPO, GRPO",
         "dodai.finetune.ppo", WORKING, _run("R5.3")),
    Item("R5.4", "推論（greedy / sampling / beam search）", "Inference: greedy, sampling, beam search",
         "dodai.generate.sampling", WORKING, _run("R5.4")),
    Item("R5.5", "KV Cache", "KV cache: the key to fast inference",
         "dodai.nn.kv_cache", WORKING, "dodai bench generate"),
    # 6. 実用アーキテクチャと代表モデル
    Item("R6.1", "Encoder型（BERT）", "Encoder: BERT, real all-MiniLM-L6-v2 weights",
         "dodai.models.bert", WORKING, _run("R6.1")),
    Item("R6.2", "Decoder型（GPT）", "Decoder: GPT-2 and Llama, real SmolLM2-135M-Instruct weights",
         "dodai.models.llama", WORKING, "dodai chat --model smollm2-135m-instruct"),
    Item("R6.3", "Encoder-Decoder型（T5、FLAN）", "Encoder-decoder: T5 and FLAN instruction tuning",
         "dodai.models.t5", WORKING, _run("R6.3")),
    Item("R6.4", "ALiBi/RoPEなどPE", "ALiBi / RoPE: position representations",
         "dodai.nn.position", WORKING, _run("R6.4")),
    Item("R6.5", "Sparse Attention（Longformer、Mistral）", "Sparse attention: sliding window, local+global",
         "dodai.nn.sparse", WORKING, _run("R6.5")),
    # 7. LLMに付随する技術領域
    Item("R7.1", "Retrieval (RAG)", "Retrieval-augmented generation", "dodai.rag", WORKING, _run("R7.1")),
    Item("R7.2", "Prompt Engineering", "Prompt engineering, constrained decoding",
         "dodai.prompting", WORKING, _run("R7.2")),
    Item("R7.3", "Agent", "Agents: a ReAct / function-calling loop", "dodai.agents", WORKING, _run("R7.3")),
    Item("R7.4", "Memory機構", "Memory: buffer, summaries, vector memory", "dodai.memory", WORKING,
         _run("R7.4")),
    Item("R7.5", "Tool Use", "Tool use: calculator, sandboxed Python, SQL, search", "dodai.tools",
         WORKING, _run("R7.5")),
    # 8. セキュリティ・倫理
    Item("R8.1", "Hallucination", "Hallucination: grounding checks, uncertainty, abstention",
         "dodai.safety.hallucination", WORKING, _run("R8.1")),
    Item("R8.2", "Jailbreak", "Jailbreak: guards and an offline red-team suite", "dodai.safety.guards",
         WORKING, _run("R8.2")),
    Item("R8.3", "データバイアス", "Data bias: WEAT/SEAT, counterfactual tests, BBQ", "dodai.safety.bias", WORKING,
         _run("R8.3")),
    # おすすめ深堀り順 / ロードマップ
    Item("R9.1", "Self-Attentionを式レベルで理解", "Self-attention at the level of equations",
         "docs/", WORKING, _run("R9.1")),
    Item("R9.2", "Multi-modal拡張（VLM）", "A small vision-language model", "dodai.models.vlm", WORKING,
         _run("R9.2")),
    Item("R9.3", "入門 / 構造理解 / 実践", "The three steps: the roadmap index with live demos",
         "dodai.site", WORKING, "dodai roadmap page --quick"),
]



def get(item_id: str) -> Item:
    from dodai.errors import DodaiError

    for it in ITEMS:
        if it.id == item_id.upper():
            return it
    raise DodaiError(f"unknown roadmap item {item_id!r}; `dodai roadmap` lists R1.1 ... R9.3")


def as_dicts() -> list[dict]:
    from dodai.experiments import EXPERIMENTS

    out = []
    for it in ITEMS:
        d = asdict(it)
        d["experiment"] = EXPERIMENTS.get(it.id)
        out.append(d)
    return out
