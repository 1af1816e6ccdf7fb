"""What each roadmap item claims, as small functions over its committed ``evidence/<ID>/results.json``.

A claim is a sentence (English and Japanese), a kind, and a check ``f(results) -> (holds, measured)``:
``measured`` is the handful of values the sentence is about, so ``dodai roadmap --json`` can print the
numbers next to the words. Kinds:

- **finding**: an outcome that could have come out otherwise (a model beats a baseline, an implementation
  agrees with a reference to 1e-12, a guard blocks unseen attacks);
- **demonstration**: holds by construction or by arithmetic (a KV cache of 1 head is 1/H the bytes of H
  heads; entropy rises with temperature; output forced through a JSON grammar is valid JSON). It shows the
  mechanism working; it is no evidence about the world.

Claims are checked on whatever run is committed, quick or full, so each is stated so that it means the same
at both scales. A key missing from the results makes the claim fail (with the reason), never pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FINDING = "finding"
DEMONSTRATION = "demonstration"


@dataclass(frozen=True)
class Claim:
    item: str
    en: str
    ja: str
    kind: str
    check: Callable[[dict], tuple[bool, dict]]

    def evaluate(self, results: dict) -> dict:
        try:
            ok, measured = self.check(results)
            error = None
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
            ok, measured, error = False, {}, f"{type(e).__name__}: {e}"
        out = {"claim": self.en, "ja": self.ja, "kind": self.kind, "holds": bool(ok), "measured": _plain(measured)}
        if error:
            out["error"] = error
        return out


CLAIMS: dict[str, list[Claim]] = {}


def claim(item: str, kind: str, en: str, ja: str):
    def deco(fn):
        CLAIMS.setdefault(item, []).append(Claim(item, en, ja, kind, fn))
        return fn
    return deco


def _plain(v):
    if isinstance(v, float):
        return round(v, 6) if abs(v) >= 1e-4 or v == 0 else float(f"{v:.3e}")
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _rows(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


# ---------------------------------------------------------------------------------------------- 1. math
@claim("R1.1", FINDING, "Held-out perplexity falls from unigram to bigram to trigram (Kneser–Ney), all below the "
       "vocabulary size",
       "ユニグラム→バイグラム→トライグラム（Kneser–Ney）の順に検証パープレキシティが下がる")
def _(r):
    p = r["ppl"]
    return p["trigram"] < p["bigram"] < p["unigram"] < r["vocab_size"], {
        "unigram": p["unigram"], "bigram": p["bigram"], "trigram": p["trigram"], "vocab_size": r["vocab_size"]}


@claim("R1.2", FINDING, "dodai's eigensolver and SVD agree with numpy.linalg to 1e-9 on every test matrix, and "
       "PCA's variances to 1e-12",
       "自作の固有値分解・SVD が numpy.linalg と 1e-9 以内で一致")
def _(r):
    worst = max(row["max abs diff of λ or σ vs numpy"] for row in r["accuracy"])
    pca = r["pca"]["max abs diff of variance vs numpy"]
    return worst < 1e-9 and pca < 1e-12, {"max_abs_diff_vs_numpy": worst, "pca_variance_diff": pca}


@claim("R1.2", FINDING, "Dropping a trained GPT's block weights (rank 0) costs ≥ 0.1 nats of validation loss, and "
       "SVD factors of half the full rank recover ≥ 90 % of the blocks' gain",
       "ブロック重みを捨てると損失が 0.1 nats 以上悪化し、半分のランクの SVD 近似で効果の 90 % 以上を回復")
def _(r):
    rows = [x for x in r["compression"] if isinstance(x["rank"], int)]
    full = next(x for x in r["compression"] if not isinstance(x["rank"], int))
    top = max(x["rank"] for x in rows)
    half = min((x for x in rows if x["rank"] >= top // 2), key=lambda x: x["rank"])
    zero = next(x for x in rows if x["rank"] == 0)
    return (zero["val loss"] > full["val loss"] + 0.1 and half["share of the blocks' gain"] >= 0.9), {
        "loss_rank0": zero["val loss"], "loss_original": full["val loss"], "half_rank": half["rank"],
        "gain_share_at_half_rank": half["share of the blocks' gain"]}


@claim("R1.3", FINDING, "The NumPy autograd's gradients match finite differences (1e-5) and torch.autograd "
       "(1e-10); SGD/Adam trajectories match torch.optim (1e-6)",
       "NumPy 自動微分の勾配が有限差分・torch.autograd と一致し、最適化の軌跡が torch.optim と一致")
def _(r):
    a, b, c = r["grad_max_rel_err_fd"], r["grad_max_rel_err_torch"], r["trajectory_max_dev_vs_torch"]
    return a < 1e-5 and b < 1e-10 and c < 1e-6, {"vs_finite_diff": a, "vs_torch": b, "trajectory_vs_torch": c}


@claim("R1.3", FINDING, "On the curved Rosenbrock valley, momentum and Adam end closer to the minimum than plain SGD "
       "in the same number of steps",
       "曲がった谷（Rosenbrock）では同じステップ数で momentum と Adam が SGD より最小点に近づく")
def _(r):
    d = {o["optimizer"]: o["distance to (1,1)"] for o in r["optimizers"]}
    return d["SGD+momentum"] < d["SGD"] and d["Adam"] < d["SGD"], d


@claim("R1.4", DEMONSTRATION, "Cross-entropy = conditional entropy + KL, per context, to float round-off",
       "クロスエントロピー = 条件付きエントロピー + KL が文脈ごとに成り立つ（恒等式）")
def _(r):
    e = max(r[m]["max abs(CE - (H + KL)) over contexts"] for m in ("bigram", "unigram"))
    return e < 1e-9, {"max_abs_error": e}


@claim("R1.4", FINDING, "The bigram model's KL to the held-out text is smaller than the unigram's, and its held-out "
       "loss equals torch's F.cross_entropy",
       "バイグラムの KL はユニグラムより小さく、損失は torch の cross_entropy と一致")
def _(r):
    kb, ku = r["bigram"]["mean KL Σ w_c KL(p_c‖q_c)"], r["unigram"]["mean KL Σ w_c KL(p_c‖q_c)"]
    dev = abs(r["bigram"]["held-out loss (nats/byte)"] - r["bigram"]["torch F.cross_entropy"])
    return kb < ku and dev < 1e-9, {"KL_bigram": kb, "KL_unigram": ku, "torch_diff": dev,
                                     "bits_per_byte_bigram": r["bigram"]["bits per byte"]}


@claim("R1.5", FINDING, "Word2Vec (skip-gram and CBOW): singular/plural pairs are closer than random pairs "
       "(rank < 0.4, random = 0.5)",
       "Word2Vec で単数形・複数形の組がランダムな組より近い（順位 < 0.4、ランダムは 0.5）")
def _(r):
    m = r["models"]
    return all(m[k]["plural_rank"] < 0.4 for k in ("sg", "cbow")), {
        "sg_plural_rank": m["sg"]["plural_rank"], "cbow_plural_rank": m["cbow"]["plural_rank"]}


# ----------------------------------------------------------------------------------------- 2. NN basics
@claim("R2.1", DEMONSTRATION, "The perceptron converges on separable data within Novikoff's bound and cannot fit "
       "XOR (as the theorems say)",
       "パーセプトロンは線形分離可能なデータで収束し（Novikoff の上界内）、XOR は解けない（定理どおり）")
def _(r):
    return (r["all_within_bound"] and r["all_converged"] and not r["xor_perceptron_converged"]
            and r["xor_perceptron_best_acc"] <= 0.75), {"xor_perceptron_best_acc": r["xor_perceptron_best_acc"]}


@claim("R2.1", FINDING, "A 2-8-2 MLP trained with dodai's autograd solves XOR", "2-8-2 の MLP は XOR を解く")
def _(r):
    return r["xor_mlp_acc"] == 1.0, {"xor_mlp_acc": r["xor_mlp_acc"]}


@claim("R2.2", FINDING, "dodai's stable activations stay finite where the naive formulas overflow, and match torch "
       "(1e-9)",
       "安定化した活性化関数は素朴な式が溢れる入力でも有限で、torch と一致")
def _(r):
    return (r["dodai_all_finite"] and r["naive_failures"] > 0 and r["stable_max_dev_vs_torch"] < 1e-9), {
        "naive_failures": r["naive_failures"], "max_dev_vs_torch": r["stable_max_dev_vs_torch"]}


@claim("R2.3", FINDING, "Loss gradients match torch to 1e-12", "損失関数の勾配が torch と 1e-12 以内で一致")
def _(r):
    return r["grad_max_dev_vs_torch"] < 1e-12, {"grad_max_dev_vs_torch": r["grad_max_dev_vs_torch"]}


@claim("R2.3", DEMONSTRATION, "At a confidently wrong logit (−10) the cross-entropy gradient stays near 1 while "
       "MSE-on-sigmoid's vanishes",
       "大きく外れた出力（−10）でも交差エントロピーの勾配は約 1、シグモイド+MSE の勾配は消える")
def _(r):
    return r["ce_grad_at_minus10"] > 0.99 and r["mse_grad_at_minus10"] < 1e-3, {
        "ce_grad": r["ce_grad_at_minus10"], "mse_grad": r["mse_grad_at_minus10"]}


@claim("R2.4", FINDING, "An MLP on the real digits scans reaches ≥ 97 % test accuracy (every seed)",
       "実際の手書き数字で MLP のテスト精度が 97 % 以上（全シード）")
def _(r):
    return r["test_acc_min"] >= 0.97, {"test_acc_min": r["test_acc_min"]}


@claim("R2.4", FINDING, "Regularisation shrinks the train/validation gap of the over-fitting baseline",
       "正則化で過学習ベースラインの訓練・検証ギャップが縮む")
def _(r):
    rows = {x["variant"].split(" ")[0]: x for x in r["overfitting"]}
    base = rows["baseline"]["train/val acc gap"]
    best = min(x["train/val acc gap"] for k, x in rows.items() if k != "baseline")
    return best < base, {"baseline_gap": base, "best_regularised_gap": best}


# ---------------------------------------------------------------------------------------------- 3. RNN
@claim("R3.1", FINDING, "A plain RNN recalls a symbol 5 steps back but is at chance 50 steps back; the gradient "
       "from 50 steps away has vanished (< 1e-8 of the last step's)",
       "単純 RNN は 5 ステップ前は思い出せるが 50 ステップ前は偶然レベル。50 ステップ先からの勾配は消失")
def _(r):
    a = r["accuracy"]
    return (a["5"] >= 0.9 and a["50"] <= r["chance"] + 0.15 and r["grad_ratio_init"] < 1e-8), {
        "acc_delay5": a["5"], "acc_delay50": a["50"], "chance": r["chance"], "grad_ratio": r["grad_ratio_init"]}


@claim("R3.2", FINDING, "LSTM and GRU solve the delay-50 recall that the plain RNN fails",
       "LSTM と GRU は単純 RNN が失敗する 50 ステップ遅延の想起を解く")
def _(r):
    a = r["accuracy"]
    return (a["lstm@50"] >= 0.9 and a["gru@50"] >= 0.9 and a["rnn@50"] <= r["chance"] + 0.15), {
        "rnn": a["rnn@50"], "lstm": a["lstm@50"], "gru": a["gru@50"], "chance": r["chance"]}


@claim("R3.3", FINDING, "Attention (Bahdanau and Luong) beats the fixed-context seq2seq overall and on the "
       "longest inputs",
       "Attention 付き seq2seq は固定長文脈より全体でも最長入力でも正解率が高い")
def _(r):
    a, longest = r["accuracy"], r["longest_bucket"]
    ok = all(a[k]["overall"] > a["none"]["overall"] and a[k][longest] > a["none"][longest] + 0.2
             for k in ("bahdanau", "luong"))
    return ok, {"none": a["none"][longest], "bahdanau": a["bahdanau"][longest], "luong": a["luong"][longest],
                "bucket": longest}


@claim("R3.4", FINDING, "At equal parameters and steps every model (RNN, LSTM, GRU, Transformer) learns "
       "(≥ 1.2 nats below its start); the measured ranking is reported, not assumed",
       "同じパラメータ数・ステップ数で RNN/LSTM/GRU/Transformer がいずれも学習する（順位は測定値のまま）")
def _(r):
    v, s = r["val_at_steps"], r["start"]
    return all(v[k] < s[k] - 1.2 for k in v), {**{f"val_{k}": x for k, x in v.items()},
                                                "best_at_equal_steps": min(v, key=v.get),
                                                "best_at_equal_time": min(r["val_at_time"], key=r["val_at_time"].get)}


# ------------------------------------------------------------------------------------ 4. Transformer core
@claim("R4.1", FINDING, "The readable attention equals torch SDPA (1e-12 in float64) inside a trained model",
       "読みやすい Attention 実装が torch SDPA と float64 で 1e-12 以内で一致")
def _(r):
    return r["max_diff_fp64"] < 1e-12 and r["model_logits_ref_vs_sdpa_max_diff"] < 1e-4, {
        "max_diff_fp64": r["max_diff_fp64"], "model_logits_diff": r["model_logits_ref_vs_sdpa_max_diff"]}


@claim("R4.1", DEMONSTRATION, "Causal masking puts exactly zero weight on future tokens; rows sum to 1",
       "因果マスクで未来のトークンへの重みは厳密に 0、各行の和は 1")
def _(r):
    return r["attn_future_weight_max"] == 0.0 and r["attn_row_sum_max_err"] < 1e-5, {
        "future_weight": r["attn_future_weight_max"], "row_sum_err": r["attn_row_sum_max_err"]}


@claim("R4.1", FINDING, "The attention model learns the text (validation loss ≥ 0.5 nats below uniform)",
       "Attention モデルが文章を学習する（検証損失が一様分布より 0.5 nats 以上低い）")
def _(r):
    return r["val_loss_end"] < r["uniform_loss"] - 0.5, {"val_loss": r["val_loss_end"], "uniform": r["uniform_loss"]}


@claim("R4.2", DEMONSTRATION, "GQA and MQA store H/H_kv times fewer KV bytes per token (arithmetic of the shapes)",
       "GQA・MQA はトークンあたりの KV バイト数が H/H_kv 分の 1（形状の算術）")
def _(r):
    rows = _rows(r["rows"], "variant")
    m = rows["MHA"]["kv_bytes_per_token"]
    ok = all(rows[k]["kv_bytes_per_token"] * rows["MHA"]["n_kv_head"] == m * rows[k]["n_kv_head"] for k in rows)
    return ok, {k: rows[k]["kv_bytes_per_token"] for k in rows}


@claim("R4.2", FINDING, "With fewer KV heads the validation loss stays within 0.1 nats of full multi-head attention",
       "KV ヘッドを減らしても検証損失は MHA から 0.1 nats 以内")
def _(r):
    rows = _rows(r["rows"], "variant")
    m = rows["MHA"]["val_loss"]
    return all(abs(x["val_loss"] - m) <= 0.1 for x in rows.values()), {k: x["val_loss"] for k, x in rows.items()}


@claim("R4.3", FINDING, "ALiBi degrades least when the text is 4× longer than training (ALiBi paper's result)",
       "学習長の 4 倍の長さで最も劣化が小さいのは ALiBi（ALiBi 論文の結果を再現）")
def _(r):
    return r["least_degradation_4x"] == "alibi", {"ratio_4x": r["ratio_4x"]}


@claim("R4.4", FINDING, "GELU MLP and SwiGLU FFNs both learn (validation loss ≥ 0.5 nats below uniform)",
       "GELU MLP と SwiGLU の FFN がどちらも学習する")
def _(r):
    ok = all(x["val_loss"] < r["uniform_loss"] - 0.5 for x in r["rows"])
    return ok, {x["ffn"]: x["val_loss"] for x in r["rows"]}


@claim("R4.5", FINDING, "Without warm-up Post-LN lags Pre-LN; warm-up narrows the gap",
       "ウォームアップなしでは Post-LN が Pre-LN に遅れ、ウォームアップで差が縮む")
def _(r):
    g = r["gaps"]["layernorm"]
    return g["no_warmup"] > 0 and g["warmup"] < g["no_warmup"], g


@claim("R4.6", DEMONSTRATION, "Byte-level BPE and Unigram (byte fallback) decode every held-out Japanese line back "
       "exactly",
       "バイト BPE と Unigram は日本語の検証行をすべて元どおりに復号する（可逆性）")
def _(r):
    return all(x["round_trip"] is True for x in r["rows"]), {x["tokenizer"]: x["round_trip"] for x in r["rows"]}


@claim("R4.6", FINDING, "A GPT trained on either tokenization improves on held-out Japanese text; the winner in bits "
       "per byte is reported",
       "どちらのトークン化でも GPT の日本語検証損失が下がる（bits/byte の勝者を報告）")
def _(r):
    ok = all(x["val_loss_per_token"] < x["init_loss"] for x in r["rows"])
    return ok, {**{x["tokenizer"]: x["val_bpb"] for x in r["rows"]}, "winner": r["winner"]}


# ------------------------------------------------------------------------------- 5. training and inference
@claim("R5.1", FINDING, "At the same data, every larger GPT reaches a lower validation loss; the power-law fit has "
       "α > 0",
       "同じデータ量なら大きな GPT ほど検証損失が低く、べき乗則の指数 α > 0")
def _(r):
    ls = r["loss"]
    return all(b < a for a, b in zip(ls, ls[1:])) and r["fit"]["alpha"] > 0, {
        "N": r["N"], "loss": ls, "alpha": r["fit"]["alpha"]}


@claim("R5.2", FINDING, "Full and LoRA fine-tuning lower the held-out loss of SmolLM2 on the task",
       "フル微調整と LoRA がともに SmolLM2 の検証損失を下げる")
def _(r):
    rows = _rows(r["table"], "model")
    b, f, lo = rows["before (no fine-tuning)"], rows["full fine-tuning"], rows["LoRA r=8"]
    return (f["held_out_loss"] < 0.75 * b["held_out_loss"] and lo["held_out_loss"] < b["held_out_loss"] - 0.15), {
        "before": b["held_out_loss"], "full": f["held_out_loss"], "lora": lo["held_out_loss"],
        "acc_before": b["held_out_accuracy"], "acc_full": f["held_out_accuracy"], "acc_lora": lo["held_out_accuracy"]}


@claim("R5.2", DEMONSTRATION, "LoRA trains fewer than half the parameters of full fine-tuning (by construction)",
       "LoRA の学習パラメータはフル微調整の半分未満（構成上）")
def _(r):
    rows = _rows(r["table"], "model")
    a, b = rows["LoRA r=8"]["trainable_params"], rows["full fine-tuning"]["trainable_params"]
    return a < b / 2, {"lora": a, "full": b}


@claim("R5.3", FINDING, "DPO raises the held-out preference margin and picks the preferred reply on > 60 % of "
       "held-out pairs",
       "DPO で検証ペアの選好マージンが上がり、60 % 超のペアで好ましい応答を選ぶ")
def _(r):
    d = r["results"]["DPO"]
    return d["held_out_margin_after"] > d["held_out_margin_before"] and d["held_out_pair_accuracy"] > 0.6, {
        "margin_before": d["held_out_margin_before"], "margin_after": d["held_out_margin_after"],
        "pair_accuracy": d["held_out_pair_accuracy"]}


@claim("R5.4", DEMONSTRATION, "Entropy of the sampling distribution rises with temperature; top-k keeps exactly k "
       "tokens; top-p and min-p shrink the support",
       "温度を上げるとエントロピーが上がり、top-k は k 個、top-p・min-p は候補を絞る（定義どおり）")
def _(r):
    s = _rows(r["settings"], "setting")
    e = [s[k]["entropy_bits"] for k in ("T=0.5", "T=1", "T=1.5")]
    return (e[0] < e[1] < e[2] and s["top-k 5"]["support"] == 5
            and s["top-p 0.5"]["support"] <= s["top-p 0.9"]["support"] < s["T=1"]["support"]
            and s["min-p 0.1"]["support"] < s["T=1"]["support"]), {"entropy_bits": e,
                                                                   "support_top_p_0.9": s["top-p 0.9"]["support"]}


@claim("R5.5", FINDING, "Decoding with the KV cache gives the same tokens and logits (1e-4) as recomputing the "
       "whole prefix",
       "KV キャッシュありの生成はキャッシュなしの再計算と同じトークン・ロジットを出す")
def _(r):
    return r["same_tokens"] and r["max_abs_logit_diff"] < 1e-4, {
        "same_tokens": r["same_tokens"], "max_abs_logit_diff": r["max_abs_logit_diff"]}


@claim("R5.5", FINDING, "The cache makes decoding faster, and more so for longer sequences",
       "キャッシュで生成が速くなり、系列が長いほど効果が大きい")
def _(r):
    sp = [x["speedup"] for x in r["rows"]]
    return sp[-1] > 1.0 and sp[-1] >= sp[0], {"speedup": sp, "tokens": [x["new_tokens"] for x in r["rows"]]}


@claim("R5.5", DEMONSTRATION, "KV-cache bytes per token = 2 × layers × KV heads × head dim × bytes per value",
       "KV キャッシュのトークンあたりバイト数 = 2 × 層 × KV ヘッド × ヘッド次元 × 要素バイト")
def _(r):
    k = r["kv"]
    want = 2 * k["n_layer"] * k["n_kv_head"] * k["head_dim"] * k["bytes_per_value"]
    return k["bytes_per_token"] == want == k["allocated_per_token"], {
        "bytes_per_token": k["bytes_per_token"], "formula": want, "allocated_per_token": k["allocated_per_token"]}


# ------------------------------------------------------------------------------------- 6. architectures
@claim("R6.1", FINDING, "MLM pre-training with dodai's BERT beats training from scratch on the classification task",
       "dodai の BERT で MLM 事前学習すると、ゼロから学習するより分類精度が高い")
def _(r):
    rows = _rows(r["rows"], "model")
    a, b = rows["small BERT, dodai MLM"], rows["small BERT, scratch"]
    return bool(r["pretrained_beats_scratch"]), {"mlm": a["accuracy"], "scratch": b["accuracy"],
                                                 "majority": rows["majority class"]["accuracy"]}


@claim("R6.2", FINDING, "SmolLM2-135M in dodai's Llama predicts \" Paris\" after \"The capital of France is\" and "
       "its held-out loss falls with more context",
       "SmolLM2 が \"Paris\" を予測し、文脈が長いほど損失が下がる")
def _(r):
    return (r["facts"][0]["top"][0][0] == " Paris" and r["loss_last_quarter"] < r["loss_first_quarter"]), {
        "top": r["facts"][0]["top"][0][0], "bits_per_byte": r["held_out"]["bits_per_byte"],
        "loss_first_quarter": r["loss_first_quarter"], "loss_last_quarter": r["loss_last_quarter"]}


@claim("R6.3", FINDING, "FLAN-style instruction tuning lowers T5's answer loss on unseen examples of the training "
       "tasks to < 0.7× the span-corruption-only model's",
       "指示チューニングで学習タスクの未見例の回答損失が 0.7 倍未満に下がる")
def _(r):
    tr = r["summary"]["train_tasks_heldout_examples"]
    return tr["instruction_tuned_loss"] < 0.7 * tr["pretrained_only_loss"], {
        "instruction_tuned_loss": tr["instruction_tuned_loss"], "pretrained_only_loss": tr["pretrained_only_loss"]}


@claim("R6.3", FINDING, "On held-out tasks (never trained on) instruction tuning lowers the answer loss",
       "学習していないタスクでも指示チューニングで回答損失が下がる")
def _(r):
    h = r["summary"]["heldout_tasks"]
    return h["instruction_tuned_loss"] < h["pretrained_only_loss"], {
        "instruction_tuned_loss": h["instruction_tuned_loss"], "pretrained_only_loss": h["pretrained_only_loss"],
        "instruction_tuned_score": h.get("instruction_tuned"), "pretrained_only_score": h.get("pretrained_only")}


@claim("R6.5", DEMONSTRATION, "Sliding-window and Longformer attention memory grows linearly with length (log-log "
       "slope ≤ 1.15, i.e. 4× length → ≤ 5×) while dense attention's grows quadratically (slope ≥ 1.8, 4× → ≥ 12×)",
       "スライディング窓・Longformer のメモリは長さに線形、密な Attention は二乗で増える")
def _(r):
    import math

    # Each method's slope over its own length range: dense_ref stops at a shorter T than the others in full mode.
    slope = {}
    for name in ("dense_ref", "sliding", "longformer"):
        pts = sorted((x["T"], x["MiB"]) for x in r["rows"] if x["method"] == name)
        slope[name] = math.log(pts[-1][1] / pts[0][1]) / math.log(pts[-1][0] / pts[0][0])
    return (slope["sliding"] <= 1.15 and slope["longformer"] <= 1.15 and slope["dense_ref"] >= 1.8), {
        "dense_slope": slope["dense_ref"], "sliding_slope": slope["sliding"], "longformer_slope": slope["longformer"],
        "dense_growth": r["dense_ref_memory_growth"], "sliding_growth": r["sliding_memory_growth"],
        "longformer_growth": r["longformer_memory_growth"]}


# ----------------------------------------------------------------------------------- 7. around the LLM
@claim("R7.1", FINDING, "Hybrid retrieval's recall@10 is at least the weaker of BM25 and dense, measured against "
       "both (the better one may still win)",
       "ハイブリッド検索の recall@10 は BM25 と密ベクトル検索の弱い方以上（測定値を併記）")
def _(r):
    m = r["retrieval"] if "retrieval" in r else r["metrics"]  # held-out SQuAD retrieval (issue 21), or the old set
    key = "recall@10"
    bm, de, hy = m["bm25"][key], m["dense"][key], m["hybrid"][key]
    return hy >= min(bm, de), {"bm25": bm, "dense": de, "hybrid": hy}


@claim("R7.1", FINDING, "On held-out SQuAD 2.0 questions, SmolLM2-135M's extractive answers score a higher F1 "
       "with retrieved sources than without (each of BM25, dense and hybrid vs the no-retrieval floor); issue 21's "
       "F1 ≥ 50 / exact match ≥ 35 targets are reported beside it, met or not",
       "未調整の SQuAD 2.0 質問で、SmolLM2-135M の抽出型回答は検索した資料がある方が F1 が高い（BM25・密・ハイブリッド"
       "それぞれ対 検索なし）。issue 21 の目標 F1 ≥ 50 / 完全一致 ≥ 35 の達否も併記")
def _(r):
    a = r["answers"]
    floor = a["none"]["f1"]
    setups = ("bm25", "dense", "hybrid")
    return all(a[s]["f1"] > floor for s in setups), {
        "n": a["hybrid"]["n"], "f1": {s: a[s]["f1"] for s in (*setups, "none")},
        "exact_match": {s: a[s]["exact_match"] for s in (*setups, "none")},
        "gold_in_cited": {s: a[s]["gold_in_cited"] for s in setups}, "targets_met": r["targets"]}


@claim("R7.2", DEMONSTRATION, "Decoding constrained by the JSON schema gives 100 % valid JSON (guaranteed by the "
       "grammar)",
       "スキーマで制約したデコードは 100 % 有効な JSON（文法による保証）")
def _(r):
    c = r["conditions"]
    return all(c[k]["valid_json"] == 1.0 for k in ("zero-shot + constrained", "3-shot + constrained")), {
        k: c[k]["valid_json"] for k in c}


@claim("R7.2", FINDING, "Without constraints, 3-shot prompting gives more valid JSON than zero-shot",
       "制約なしでは 3-shot の方が zero-shot より有効な JSON が多い")
def _(r):
    c = r["conditions"]
    return c["3-shot"]["valid_json"] > c["zero-shot"]["valid_json"], {
        "zero_shot": c["zero-shot"]["valid_json"], "three_shot": c["3-shot"]["valid_json"]}


@claim("R7.3", FINDING, "With tools (ReAct or function calling) SmolLM2 solves more of the arithmetic/SQL tasks "
       "than answering directly (full run; quick mode has no direct condition and only checks the loop runs)",
       "ツールを使うと（ReAct / 関数呼び出し）SmolLM2 が直接答えるより多くの課題を解く")
def _(r):
    s = r["summary"]
    tools = max(s[c]["success"] for c in ("react", "fncall") if c in s)
    if "direct" not in s:
        return all(0.0 <= s[c]["success"] <= 1.0 for c in s), {c: s[c]["success"] for c in s}
    agents = [c for c in ("react", "fncall") if c in s]
    return tools > s["direct"]["success"], {**{c: s[c]["success"] for c in s},
                                            "arith+SQL (goal 0.9)": {c: s[c]["success_tool_exact"] for c in agents},
                                            "arith": {c: s[c].get("success_arith") for c in agents},
                                            "sql": {c: s[c].get("success_sql") for c in agents}}


@claim("R7.4", FINDING, "Long-term vector memory brings an evicted fact back into the prompt, where the token-budget "
       "buffer alone has lost it (whether the 135M model then uses it is measured separately)",
       "ベクトル記憶は、バッファから追い出された事実をプロンプトに戻す（135M モデルがそれを使えるかは別に測定）")
def _(r):
    c = r["conditions"]
    vec, buf = c["buffer + vector memory (user turn)"], c["buffer only"]
    return vec["in_prompt"] >= 0.75 and buf["in_prompt"] <= 0.25, {
        "in_prompt_vector": vec["in_prompt"], "in_prompt_buffer": buf["in_prompt"],
        "answer_accuracy": {k: v.get("accuracy") for k, v in c.items()}}


@claim("R7.5", FINDING, "Every named attack on the tools is refused or bounded and no benign call is blocked",
       "ツールへの既知の攻撃はすべて拒否・制限され、正当な呼び出しは一つも止められない")
def _(r):
    return r["attacks_blocked"] == r["attacks"] and r["false_blocks"] == 0, {
        "attacks": r["attacks"], "blocked": r["attacks_blocked"], "false_blocks": r["false_blocks"]}


# ------------------------------------------------------------------------------------ 8. safety & ethics
@claim("R8.1", FINDING, "Sequence log-probability separates SmolLM2's correct from wrong closed-book answers "
       "(AUROC > 0.6)",
       "系列対数確率で SmolLM2 の正誤を見分けられる（AUROC > 0.6）")
def _(r):
    a = r["closed_book"]["auroc"]
    key = next(k for k in ("seq_logprob", "sequence_logprob", "neg_mean_entropy") if k in a)
    return a[key] > 0.6, {"signal": key, "auroc": a[key], **{k: v for k, v in a.items()}}


@claim("R8.2", FINDING, "On the held-out attack split (written before the guards were scored) the guards block "
       "≥ 85 % of attacks with ≤ 10 % false blocks",
       "事前に固定した検証用攻撃で、ガードが 85 % 以上を防ぎ誤検知は 10 % 以下")
def _(r):
    h = r["guard_only"]["heldout"]
    g = r["goal"]
    return (h["block_rate"] >= g["heldout_block_rate"] and h["false_block_rate"] <= g["heldout_false_block_rate"]), {
        "block_rate": h["block_rate"], "false_block_rate": h["false_block_rate"], "n_attacks": h["n_attacks"]}


@claim("R8.3", FINDING, "WEAT on real embeddings reproduces the direction of most of the published effects it tests "
       "(quick mode tests only WEAT1 on GloVe)", "実際の埋め込みで WEAT が公表された効果の向きの大半を再現")
def _(r):
    rows = r["weat"]
    n = sum(bool(x["direction_reproduces"]) for x in rows)
    return n * 2 > len(rows) > 0, {"reproduced": n, "tests": len(rows),
                                   "embeddings": sorted({x["embedding"] for x in rows})}


# ------------------------------------------------------------------------------------ 9. deep dives
@claim("R9.1", FINDING, "Every equation of one attention layer recomputed with plain torch ops in float64 matches the "
       "model's own tensors: the projections exactly, every step within 1e-5 (what remains is the model's float32 "
       "choices, as HF's: the RMSNorm statistic and, in SmolLM2, the RoPE angles)",
       "Attention 層の各式を float64 の素の torch 演算で再計算すると、射影は完全一致、全ステップが 1e-5 以内で一致")
def _(r):
    steps = {s["tensor"]: s["max_abs_diff"] for s in r["steps"]}
    worst = max(s["max_abs_diff"] for s in r["steps"])
    exact = all(steps[t] == 0.0 for t in ("Q", "K", "V"))
    return exact and worst <= 1e-5, {"projections_exact": exact, "worst_step_diff": worst,
                                     "final_output_diff": r["steps"][-1]["max_abs_diff"]}


@claim("R9.1", DEMONSTRATION, "Softmax rows sum to 1 and causal masking gives future tokens zero weight",
       "softmax の各行の和は 1、未来のトークンへの重みは 0")
def _(r):
    return r["row_sum_err"] <= 1e-12 and r["future_weight"] == 0.0, {
        "row_sum_err": r["row_sum_err"], "future_weight": r["future_weight"]}


@claim("R9.2", FINDING, "The VLM names the layout of held-out scenes far better than the best image-blind baseline "
       "(the majority layout) and than itself fed the wrong image",
       "VLM はレイアウトを、画像を見ない最良のベースライン（多数派）や別画像を与えた場合より大幅に当てる")
def _(r):
    s = r["systems"]
    v, shuf = s["VLM (held-out scans)"]["layout"], s["VLM, shuffled images"]["layout"]
    maj = r["majority_layout"]["test_layout_accuracy"]
    text = s["text-only baseline"]["layout"]
    return v >= max(maj, text, shuf) + 0.2, {"vlm": v, "majority_layout": maj, "text_only": text,
                                              "shuffled_images": shuf}


@claim("R9.2", FINDING, "The VLM reads the digits of held-out scans: digit identity per slot at least 0.3 above every "
       "image-blind baseline (majority digit, majority caption, text-only model) and the VLM fed the wrong image",
       "VLM は未見のスキャンの数字を読む：スロットごとの数字正解率が、画像を見ないどのベースライン（多数派の数字・"
       "多数派キャプション・テキストのみのモデル）や別画像を与えた VLM より 0.3 以上高い")
def _(r):
    s = r["systems"]
    v = s["VLM (held-out scans)"]["digit"]
    blind = {"majority_digit": r["majority_digit"]["test_digit_accuracy"],
             "majority_caption": s["majority caption"]["digit"], "text_only": s["text-only baseline"]["digit"],
             "shuffled_images": s["VLM, shuffled images"]["digit"]}
    # issue 21's quality goal (digits >= 0.8 per slot, exact >= 0.5) is reported beside the claim, not asserted as
    # one: a missed goal is a figure to read (README, report), the item still does what its claim says
    vlm = s["VLM (held-out scans)"]
    cls = r.get("image_only_classifiers") or {}
    goal = {"goal_digit_0.8": "met" if v >= 0.8 else "missed", "vlm_exact": vlm["exact"],
            "goal_exact_0.5": "met" if vlm["exact"] >= 0.5 else "missed"}
    if "MLP" in cls:
        goal["mlp_on_crops_digit"] = cls["MLP"]["digit"]
    return v >= max(blind.values()) + 0.3, {"vlm_digit": v, **blind, **goal}


@claim("R9.3", FINDING, "Measured from the models' outputs: BERT's positions depend on every token, the decoder's "
       "exactly on the tokens up to their own (the lower triangle)",
       "モデルの出力から測ると、BERT は全トークンに依存し、デコーダは自分以前のトークンだけに依存する（下三角）")
def _(r):
    m = r["masks"]
    return m["encoder_all_ones"] and m["decoder_equals_lower_triangle"], m


@claim("R9.3", FINDING, "Editing a word right of the blank changes BERT's prediction at the blank and never the "
       "decoder's logits there",
       "空欄の右の単語を変えると BERT の予測は変わり、デコーダのロジットは変わらない")
def _(r):
    c = r["checks"]
    enc = min(x["BERT max |Δlogit| at blank"] for x in c)
    dec = max(x["GPT max |Δlogit| at blank"] for x in c)
    return enc > 1e-4 and dec < 1e-4, {"min_bert_delta": enc, "max_gpt_delta": dec}


@claim("speedrun", FINDING, "The speedrun's GPT goes ≥ 0.5 nats below its initial validation loss in the budget",
       "speedrun の GPT が予算内で初期の検証損失から 0.5 nats 以上下がる")
def _(r):
    return r["val_loss"] < r["initial_val_loss"] - 0.5, {"initial_val_loss": r["initial_val_loss"],
                                                           "val_loss": r["val_loss"], "steps": r["steps"]}
