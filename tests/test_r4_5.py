"""R4.5 Pre-LN vs Post-LN, quick mode (6 layers, Adam lr 1e-3, 150 steps, LayerNorm)."""

from dodai.experiments.r4_5 import run


def test_r4_5_post_ln_lags_without_warmup(tmp_path):
    r = run(tmp_path, quick=True)
    rows = {(x["block_order"], x["warmup_steps"]): x for x in r["rows"] if x["norm"] == "layernorm"}
    pre0, post0 = rows[("pre", 0)], rows[("post", 0)]
    # Xiong et al. 2020's direction, checked on seeds 0 and 1 (gaps 0.50 and 0.05 nats/char):
    # with no warm-up at a high learning rate, Post-LN ends with a higher loss than Pre-LN.
    assert post0["diverged"] or post0["final_train_loss"] > pre0["final_train_loss"]
    # Pre-LN trains without warm-up: far below the uniform loss ln V.
    assert pre0["final_train_loss"] < r["uniform_loss"] - 1.0
    # with warm-up both train (finite, below uniform)
    for order in ("pre", "post"):
        assert not rows[(order, r["warmup"])]["diverged"]
        assert rows[(order, r["warmup"])]["final_train_loss"] < r["uniform_loss"] - 0.5
    assert (tmp_path / "report.md").is_file() and (tmp_path / "loss_curves.png").is_file()
