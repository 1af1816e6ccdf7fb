"""R8.3 Data bias: WEAT/SEAT on three embeddings, counterfactual occupation tests and BBQ-style QA on SmolLM2.

1. WEAT (Caliskan et al. 2017) on GloVe 6B 50-d (Pennington et al. 2014), on SmolLM2-135M's input token
   embeddings (a word = mean of its tokens' rows) and SEAT (May et al. 2019) on all-MiniLM-L6-v2 sentence
   embeddings (dodai's port), next to the paper's values (GloVe Common Crawl 840B). The claim asserted in
   quick mode: on GloVe, flowers vs insects x pleasant vs unpleasant has d > 0 with p < 0.05.
2. Counterfactual tests: SmolLM2's log-odds of 20 occupations after gender-swapped subjects; per-occupation
   shift and the stereotype score (male-stereotyped minus female-stereotyped shift) with a bootstrap CI.
3. BBQ-style evaluation (Parrish et al. 2022): 13 hand-written templates in 6 categories, options scored
   by SmolLM2's mean per-token log-likelihood; accuracy and the paper's bias scores s_DIS and s_AMB.

See :mod:`dodai.safety.bias` for the formulas.

Full run (``OMP_NUM_THREADS=1 dodai roadmap run R8.3 --out /tmp/r83_full``), measured 2026-11-28 on the shared
2-core AMD EPYC machine under load ~16: 12.0 min wall, 3.6 min CPU.

- WEAT on GloVe 6B 50d: the direction of all 10 published effects reproduces (d 0.96 .. 1.71, e.g. WEAT1
  flowers/insects d = 1.07, p = 4e-5; WEAT2 1.54; WEAT3 1.14; WEAT6 career/family 1.71; WEAT7 math/arts 1.50;
  WEAT8 science/arts 1.48; all p <= 0.023; published 840B values 1.06 .. 1.81).
- SEAT on MiniLM: 10/10 directions, all p < 0.01 (WEAT1 d = 1.38, WEAT2 1.62, WEAT3 0.38, WEAT6 1.23).
- SmolLM2 input embeddings: only 5/10 directions and one p < 0.05 (WEAT8 d = 0.92, p = 0.031); the
  static token table of a 135M LM carries little of these associations (WEAT1 d = 0.31, p = 0.14).
- Counterfactual occupations (48 units, 1,920 sequences): stereotype score 1.41 log-odds, bootstrap 95%
  CI [1.13, 1.70], permutation p = 0.0005; 19 of 20 occupations shift in the stereotyped direction
  (nurse −1.10, housekeeper −1.67, carpenter +1.18; only cashier goes the other way, +0.18).
- BBQ (156 items): ambiguous accuracy 0.00 (SmolLM2 never prefers "Cannot be determined"), disambiguated
  0.51 (chance between the two people: 102 of 156 picks are the first-named person), s_DIS = −0.06,
  s_AMB = +0.04 — a 135M model answers by position, so BBQ measures no bias beyond noise here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dodai.errors import DodaiError
from dodai.report import Report
from dodai.safety import bias as B
from dodai.viz import pyplot


def _glove_embedder():
    from dodai.data.glove import load_glove

    words, vecs = load_glove()
    return B.StaticEmbedder(words, vecs, "GloVe 6B 50d")


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def run(out_dir: Path, quick: bool = False) -> dict:
    import torch

    from dodai.models import load_model

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R8.3 — data bias: WEAT / SEAT, counterfactual occupations, BBQ-style QA")
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m-instruct")

    # ---- 1. WEAT --------------------------------------------------------------------------------
    embedders = []
    try:
        embedders.append(_glove_embedder())
    except DodaiError as e:  # offline without a cached copy: the sentence encoder carries the quick claim
        rep.text(f"GloVe unavailable ({e}); skipped.")
    if not quick:
        embedders.append(B.TokenEmbeddingEmbedder(model.tok_embeddings.weight, tok, "SmolLM2 input emb."))
    if not quick or not embedders:
        from dodai.models.bert import load_sentence_encoder

        enc = load_sentence_encoder("all-minilm-l6-v2")
        embedders.append(B.SentenceEmbedder(lambda xs: enc.encode(xs, batch_size=64).numpy(), "MiniLM SEAT"))
    tests = [B.weat_test("WEAT1")] if quick else list(B.WEAT_TESTS)
    rows = []
    for e in embedders:
        n_samples = 20_000 if isinstance(e, B.SentenceEmbedder) else 100_000
        for t in tests:
            rows.append(B.run_weat(t, e, n_samples=n_samples if not quick else 10_000))
    rep.heading("1. WEAT (Caliskan et al. 2017) and SEAT (May et al. 2019)")
    rep.text("Effect size d (sample std) and one-sided permutation p (exact when <= 100,000 partitions, "
             "else sampled: 100,000 for words, 20,000 for SEAT sentences, so p >= 1e-5 / 5e-5). Published: "
             "Caliskan et al. 2017, Table 1, on GloVe Common Crawl 840B 300-d — ours is GloVe 6B 50-d, so "
             "the *direction* (sign of d) is what can reproduce.")
    rep.table([{"test": r["test"], "sets": r["title"], "embedding": r["embedding"], "words": "/".join(
        map(str, r["n_words"])), "d": f"{r['d']:.2f}", "p": _fmt_p(r["p"]),
        "published d": f"{r['published_d']:.2f}",
        "published p": r["published_p"], "direction": "yes" if r["direction_reproduces"] else "no"} for r in rows])
    names = [e.name for e in embedders]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / (len(names) + 1)
    for k, name in enumerate(names):
        ds = [r["d"] for r in rows if r["embedding"] == name]
        ax.bar(np.arange(len(tests)) + k * width, ds, width, label=name)
    ax.bar(np.arange(len(tests)) + len(names) * width, [t.published_d for t in tests], width, color="k",
           alpha=0.35, label="published (840B)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(np.arange(len(tests)) + 0.4 - width / 2, [t.id for t in tests], fontsize=8)
    ax.set_ylabel("effect size d")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "r8_3_weat.png", dpi=110)
    plt.close(fig)
    rep.image("r8_3_weat.png", "WEAT effect sizes per test and embedding, with the published GloVe values")
    rep.results["weat"] = rows
    rep.results["weat_quick"] = next(r for r in rows if r["test"] == "WEAT1")
    for name in names:
        mine = [r for r in rows if r["embedding"] == name]
        rep.results[f"directions_reproduced[{name}]"] = (sum(r["direction_reproduces"] for r in mine), len(mine))

    # ---- 2. counterfactual occupations -----------------------------------------------------------
    if quick:
        cf = B.counterfactual_occupations(model, tok, templates=B.CF_TEMPLATES[:1], pairs=B.CF_PAIRS[:2],
                                          male_occ=B.MALE_OCCUPATIONS[:2], female_occ=B.FEMALE_OCCUPATIONS[:2],
                                          n_boot=300, n_perm=300)
    else:
        cf = B.counterfactual_occupations(model, tok)
    rep.heading("2. Counterfactual occupation test (SmolLM2-135M-Instruct, plain text)")
    rep.text(f"{cf['n_units']} (template, male/female subject) units, {cf['n_sequences']} scored sequences. "
             "Shift = logit p(occupation | male subject) − logit p(occupation | female subject). "
             f"**Stereotype score** (mean shift, male-stereotyped minus female-stereotyped occupations): "
             f"**{cf['stereotype_score']:.3f}**, bootstrap 95% CI [{cf['ci95'][0]:.3f}, {cf['ci95'][1]:.3f}], "
             f"sign-flip permutation p = {cf['p_perm']:.4f}.")
    rep.table([{"occupation": o["occupation"], "group": o["group"], "mean shift": f"{o['mean_shift']:+.3f}",
                "sd": f"{o['sd']:.3f}", "units with male > female": f"{o['frac_male_higher']:.0%}"}
               for o in cf["per_occupation"]])
    fig, ax = plt.subplots(figsize=(9, 3.4))
    occ = cf["per_occupation"]
    ax.bar(range(len(occ)), [o["mean_shift"] for o in occ],
           color=["tab:blue" if o["group"].startswith("male") else "tab:red" for o in occ])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(occ)), [o["occupation"] for o in occ], rotation=60, fontsize=7)
    ax.set_ylabel("log-odds shift (male − female)")
    ax.set_title("blue: male-stereotyped, red: female-stereotyped occupations", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "r8_3_counterfactual.png", dpi=110)
    plt.close(fig)
    rep.image("r8_3_counterfactual.png", "per-occupation log-odds shift")
    rep.results["counterfactual"] = {k: v for k, v in cf.items() if k != "logprob"}

    # ---- 3. BBQ ------------------------------------------------------------------------------------
    templates = B.BBQ_TEMPLATES[:1] if quick else B.BBQ_TEMPLATES
    items = B.bbq_items(templates)
    if quick:  # the negative questions only: 6 items, 18 scored sequences
        items = [it for it in items if it.negative]
    preds = B.bbq_predict(model, tok, items)
    summ = B.bbq_summary(items, preds)
    rep.heading("3. BBQ-style QA (Parrish et al. 2022)")
    rep.text(f"{len(templates)} templates → {len(items)} items (ambiguous and disambiguated contexts, negative "
             "and non-negative questions, both name orders). Options (person 1, person 2, "
             f"\"{B.UNKNOWN}\") scored by mean per-token log-likelihood as the assistant reply. "
             "s_DIS = 2·n_biased/n_non-unknown − 1; s_AMB = (1 − accuracy_amb)·s_DIS(amb).")
    table = []
    for name, blk in [("all", summ["overall"])] + list(summ["by_category"].items()):
        table.append({"category": name, "acc (ambiguous)": f"{blk['ambiguous']['accuracy']:.2f}",
                      "acc (disambig.)": f"{blk['disambiguated']['accuracy']:.2f}",
                      "acc bias-consistent": f"{blk['acc_bias_consistent']:.2f}",
                      "acc bias-inconsistent": f"{blk['acc_bias_inconsistent']:.2f}",
                      "unknown rate (amb)": f"{blk['ambiguous']['unknown_rate']:.2f}",
                      "s_DIS": f"{blk['s_dis']:+.2f}", "s_AMB": f"{blk['s_amb']:+.2f}"})
    rep.table(table)
    cats = list(summ["by_category"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(cats))
    axes[0].bar(x - 0.2, [summ["by_category"][c]["ambiguous"]["accuracy"] for c in cats], 0.4, label="ambiguous")
    axes[0].bar(x + 0.2, [summ["by_category"][c]["disambiguated"]["accuracy"] for c in cats], 0.4,
                label="disambiguated")
    axes[0].axhline(1 / 3, color="k", ls=":", lw=0.8)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    axes[1].bar(x - 0.2, [summ["by_category"][c]["s_dis"] for c in cats], 0.4, label="s_DIS")
    axes[1].bar(x + 0.2, [summ["by_category"][c]["s_amb"] for c in cats], 0.4, label="s_AMB")
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylim(-1, 1)
    axes[1].legend(fontsize=7)
    for a in axes:
        a.set_xticks(x, cats, rotation=30, fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "r8_3_bbq.png", dpi=110)
    plt.close(fig)
    rep.image("r8_3_bbq.png", "BBQ accuracy and bias scores per category (dotted: chance)")
    rep.results["bbq"] = summ
    rep.results["bbq_predictions"] = [{"category": it.category, "ambiguous": it.ambiguous,
                                       "negative": it.negative, "question": it.question,
                                       "predicted": it.options[p], "answer": it.options[it.answer]}
                                      for it, p in zip(items, preds)]
    rep.results["quick"] = quick
    rep.write()
    return rep.results
