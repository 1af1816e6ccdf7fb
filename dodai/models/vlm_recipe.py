"""R9.2's training recipe, the one source of the full run's settings and of ``dodai vlm train``'s defaults.

Kept free of imports so that the CLI can read it while building its parser without loading torch.

- ``pre_steps``, ``pre_lr``: stage 1, the vision encoder trained alone as a dense digit tagger
  (:func:`dodai.models.vlm.pretrain_vision`), steps and peak learning rate;
- ``curriculum_steps``: stage-2 caption steps on "large" scenes only before every kind (0: none);
- ``steps``, ``lr``: stage-2 caption steps on every scene kind and their peak learning rate;
- ``batch_size``: fresh scenes per step (both stages);
- ``train_vision``: whether stage 2 fine-tunes the vision encoder (False: frozen, as LLaVA keeps CLIP's).

The model is :func:`dodai.models.vlm.default_config`'s (a convolutional stem on 8x8-pixel cells).
"""

RECIPE = dict(pre_steps=1000, pre_lr=3e-3, curriculum_steps=0, steps=600, batch_size=64, lr=2e-3, train_vision=False)
