"""Runs of :func:`dodai.train.fit.fit` that ``tests/test_fit.py`` repeats under ``torchrun`` (2 gloo processes).

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/fit_ddp_worker.py OUT.json WORKDIR TEXT``
writes, from rank 0, the losses of: a tiny LM under DDP, the same under FSDP2, an FSDP2 run killed after a
checkpoint and resumed, and DPO (a fine-tuning path, its batches split by pairs); then it runs ``dodai
pretrain --parallel fsdp`` on TEXT into WORKDIR/pretrain (a GPT with tied embeddings, saved through the
gathered weights). The test runs the same in one process and compares.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fit_scenarios as S  # noqa: E402

from dodai.train import distributed  # noqa: E402
from dodai.train.fit import FitConfig, fit  # noqa: E402


class Stop(Exception):
    pass


def lm_run(info, parallel: str = "ddp", out=None, resume: bool = False, stop_at: int | None = None) -> dict:
    """8 sequences per micro-batch, 2 micro-batches per step, clipping, AdamW with decay, cosine schedule;
    an evaluation (and with ``out`` a checkpoint) at steps 0, 2, 4, 6."""
    torch.manual_seed(0)
    model = S.TinyLM(S.TinyConfig(block_size=8))
    data = S.lm_stream()
    g = torch.Generator().manual_seed(1)
    fixed = data[:72].view(8, 9)

    def batches(i):
        ix = torch.randint(len(data) - 9, (8,), generator=g)
        win = data[ix[:, None] + torch.arange(9)]  # (8, 9)
        return win[:, :-1], win[:, 1:]

    def on_step(row):
        if stop_at is not None and row["step"] == stop_at:
            raise Stop

    cfg = FitConfig(steps=6, lr=1e-2, weight_decay=0.1, grad_clip=1.0, grad_accum=2, schedule="cosine", warmup=2,
                    parallel=parallel, eval_every=2, eval_at_start=True)
    res = fit(model, batches, lambda m, b: m(*b)[1], cfg, info=info, out_dir=out, resume=resume, on_step=on_step,
              evaluate=lambda m: {"fixed": float(m(fixed[:, :-1], fixed[:, 1:])[1])})
    return {"loss": [r["loss"] for r in res.history], "fixed": [r["fixed"] for r in res.evals]}


def dpo_run() -> dict:
    from dodai.finetune import dpo

    policy = S.tiny_lm(3)
    ref = copy.deepcopy(policy)
    hist = dpo.train_dpo(policy, ref, S.pairs(20, 2), dpo.DPOConfig(steps=4, batch_size=4, lr=1e-2, seed=2))
    return {k: [r[k] for r in hist] for k in ("loss", "margin", "accuracy")}


def pretrain_args(text) -> list[str]:
    return ["pretrain", "--data", str(text), "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--eval-iters", "2", "--warmup-iters", "5", "--learning-rate", "1e-2", "--quiet", "--threads", "1",
            "--batch-size", "8", "--max-iters", "20", "--eval-interval", "10"]


if __name__ == "__main__":
    out_json, work, text = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    info, _ = distributed.init("cpu")
    try:
        got = {"world_size": info.world_size, "ddp": lm_run(info, "ddp"), "fsdp": lm_run(info, "fsdp")}
        try:
            lm_run(info, "fsdp", out=work / "fsdp", stop_at=5)  # checkpoints at 2 and 4, dies in step 5
        except Stop:
            pass
        torch.distributed.barrier()
        got["fsdp_resumed"] = lm_run(info, "fsdp", out=work / "fsdp", resume=True)
        got["dpo"] = dpo_run()
        if info.is_main:
            out_json.write_text(json.dumps(got))
        from dodai.cli import main

        # last: the command shuts the process group down when it is done
        rc = main([*pretrain_args(text), "--parallel", "fsdp", "--out", str(work / "pretrain")])
        if rc:
            sys.exit(rc)
    finally:
        distributed.shutdown(info)
