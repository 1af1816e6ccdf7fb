"""dodai.train: the one training loop and its parts.

- :mod:`dodai.train.fit` — :func:`~dodai.train.fit.fit`, the loop every trainer of dodai runs on (pre-training,
  SFT, reward model, DPO, PPO/GRPO updates, MLM, classifier, VLM, experiments): optimizer and schedule,
  accumulation, clipping, bf16, DDP/FSDP2, checkpoints with bitwise resume, NaN halt, metrics, progress,
  ``torch.compile``;
- :mod:`dodai.train.trainer` — language-model pre-training on fit (:class:`~dodai.train.trainer.TrainConfig`,
  ``train(...)``);
- :mod:`dodai.train.mlm`, :mod:`dodai.train.span_corruption` — the BERT and T5 objectives;
- :mod:`dodai.train.schedule` — warmup + cosine/linear/WSD learning rates, by step or by time;
- :mod:`dodai.train.checkpoint` — atomic checkpoints and RNG state for bitwise resume;
- :mod:`dodai.train.distributed` — torchrun helpers; :mod:`dodai.train.progress` — the bar / log lines.
"""
