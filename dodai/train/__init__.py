"""dodai.train: the pre-training loop and its parts.

- :mod:`dodai.train.trainer` — :class:`~dodai.train.trainer.TrainConfig` and ``train(...)``;
- :mod:`dodai.train.schedule` — warmup + cosine learning rate;
- :mod:`dodai.train.checkpoint` — atomic checkpoints and RNG state for bitwise resume;
- :mod:`dodai.train.distributed` — torchrun/DDP helpers.
"""
