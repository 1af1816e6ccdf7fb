"""Post-training (R5.2, R5.3): SFT with loss masking, LoRA, reward model, PPO-based RLHF, DPO, GRPO.

- :mod:`dodai.finetune.lora` — low-rank adapters that wrap ``nn.Linear`` modules; merge/unmerge; save.
- :mod:`dodai.finetune.sft` — chat JSONL → chat-template rendering with assistant-only labels; training loop.
- :mod:`dodai.finetune.tasks` — a rule-generated task (free-form dates → ISO JSON), exact checker, judge.
- :mod:`dodai.finetune.losses` — DPO, Bradley–Terry, PPO (clipped surrogate, value loss, GAE), GRPO.
- :mod:`dodai.finetune.policy` — log-probs of completions, sampling rollouts, heads on the final hidden state.
- :mod:`dodai.finetune.dpo`, :mod:`~dodai.finetune.reward`, :mod:`~dodai.finetune.grpo`,
  :mod:`~dodai.finetune.ppo` — the training loops.
"""
