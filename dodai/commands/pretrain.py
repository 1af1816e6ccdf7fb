"""`dodai pretrain`: pre-train a GPT on a text file, folder, .jsonl or the built-in corpus (R5.1).

Flags mirror nanoGPT's ``train.py`` (``--n-layer --block-size --max-iters --lr-decay-iters ...``) and
its defaults for the README CPU recipe (4 layers, 4 heads, 128 dims, block 64, batch 12, no bias,
dropout 0, lr 1e-3 → 1e-4, warmup 100, AdamW β2 0.99, weight decay 0.1, clip 1.0). Run under
``torchrun --nproc_per_node=N -m dodai pretrain ...`` for data parallelism (``--parallel fsdp`` shards the
parameters instead of replicating them). The loop is :func:`dodai.train.fit.fit`.

The run folder (``--out``) gets config.json, model.safetensors, tokenizer.json (loadable with
``dodai.models.load_model``), train_config.json, data_meta.json, metrics.jsonl, loss.png and ckpt/.
"""

from __future__ import annotations

HELP = "pre-train a GPT (nanoGPT-style flags) on a text file/folder/.jsonl or the built-in corpus"


def add_arguments(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="python-docs",
                   help="a .txt/.md file, a folder of them, a .jsonl, or a corpus name (default: python-docs)")
    g.add_argument("--text-field", default="text", help="field holding the text in .jsonl lines (default: text)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of the data held out (default: 0.1)")
    g.add_argument("--tokenizer", default="char",
                   help="char, bpe (trained on the train split), or a tokenizer.json / model folder / registry name")
    g.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size with --tokenizer bpe")
    g = p.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=4, help="Transformer blocks")
    g.add_argument("--n-head", type=int, default=4, help="attention heads")
    g.add_argument("--n-embd", type=int, default=128, help="model width")
    g.add_argument("--block-size", type=int, default=64, help="context length in tokens")
    g.add_argument("--dropout", type=float, default=0.0, help="dropout rate")
    g.add_argument("--bias", action="store_true", help="biases in Linear/LayerNorm (nanoGPT's default: none)")
    g.add_argument("--pos-encoding", default="learned", choices=["learned", "sinusoidal", "rope", "none"],
                   help="position encoding (default: learned, as GPT-2)")
    g = p.add_argument_group("optimization")
    g.add_argument("--batch-size", type=int, default=12, help="sequences per micro-batch (global)")
    g.add_argument("--gradient-accumulation-steps", "--grad-accum", dest="gradient_accumulation_steps", type=int,
                   default=1, help="micro-batches per optimizer step")
    g.add_argument("--max-iters", type=int, default=2000, help="optimizer steps")
    g.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--min-lr", type=float, default=None, help="final learning rate (default: learning-rate / 10)")
    g.add_argument("--warmup-iters", type=int, default=100, help="linear warmup steps")
    g.add_argument("--lr-decay-iters", type=int, default=None, help="step where the cosine ends (default: max-iters)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    g.add_argument("--beta2", type=float, default=0.99, help="AdamW beta2")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    g = p.add_argument_group("run")
    g.add_argument("--eval-interval", type=int, default=250, help="evaluate and checkpoint every N steps")
    g.add_argument("--eval-iters", type=int, default=20, help="batches per evaluation")
    g.add_argument("--seed", type=int, default=1337, help="random seed")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    g.add_argument("--max-minutes", type=float, default=None, help="wall-clock limit; stops with a final eval")
    g.add_argument("--budget-minutes", type=float, default=None,
                   help="time-driven run: warmup, cosine decay and evaluations follow the fraction of this wall-clock "
                        "budget, and training ends with it (--max-iters becomes an upper bound)")
    g.add_argument("--warmup-frac", type=float, default=0.05,
                   help="with --budget-minutes: warmup as a fraction of the budget (default 0.05)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model for the training step (on CPU needs a C++ compiler)")
    g.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"],
                   help="under torchrun: ddp (a replica per process) or fsdp (FSDP2: parameters sharded)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--out", default="runs/pretrain", help="run folder (default: runs/pretrain)")
    g.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_tokenizer(spec: str, train_text: str, all_text: str, vocab_size: int, quiet: bool = True):
    """char: the sorted set of characters of all the text (nanoGPT's shakespeare_char vocabulary);
    bpe: byte-level BPE trained on the train split; anything else: load_tokenizer(spec)."""
    if spec == "char":
        from dodai.tokenizers.char import CharTokenizer

        return CharTokenizer.train(all_text) if hasattr(CharTokenizer, "train") else CharTokenizer(all_text)
    if spec == "bpe":
        from dodai.tokenizers.bpe import ByteLevelBPE

        return ByteLevelBPE.train(train_text, vocab_size, special_tokens=["<|endoftext|>"])
    from dodai.tokenizers import load_tokenizer

    return load_tokenizer(spec)


def encode(tok, text: str):
    from dodai.data.batching import to_tensor

    return to_tensor(tok.encode(text), tok.vocab_size)


def run(args) -> int:
    import sys
    from pathlib import Path

    import torch

    from dodai.data.prepare import load_split
    from dodai.errors import DodaiError
    from dodai.io import atomic_write_json
    from dodai.models.gpt import GPT, GPTConfig
    from dodai.train import distributed
    from dodai.train.trainer import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    info, device = distributed.init(args.device)
    try:
        split = load_split(args.data, args.val_fraction, args.text_field, seed=0)
        tok = None
        if args.resume and (out / "ckpt" / "tokenizer.json").is_file() and args.tokenizer == "bpe":
            from dodai.tokenizers import load_tokenizer

            tok = load_tokenizer(str(out / "ckpt" / "tokenizer.json"))  # retraining would be deterministic, just slower
        if tok is None:
            tok = build_tokenizer(args.tokenizer, split.train, split.train + split.val, args.vocab_size)
        train_ids, val_ids = encode(tok, split.train), encode(tok, split.val)
        bytes_per_token = split.meta["val_bytes"] / max(val_ids.numel(), 1)
        if info.is_main:
            print(f"data: {split.meta['documents']} document(s), train {train_ids.numel():,} tokens, "
                  f"val {val_ids.numel():,} tokens, vocab {tok.vocab_size}, {bytes_per_token:.2f} bytes/token",
                  file=sys.stderr)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "data_meta.json", split.meta | {"tokenizer": args.tokenizer,
                                                                    "vocab_size": tok.vocab_size,
                                                                    "val_bytes_per_token": bytes_per_token})
        mcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, bias=args.bias,
                         pos_encoding=args.pos_encoding)
        torch.manual_seed(args.seed)
        model = GPT(mcfg)
        if info.is_main:
            print(f"model: {model.num_params() / 1e6:.2f} M parameters", file=sys.stderr)
        cfg = TrainConfig(
            batch_size=args.batch_size, block_size=args.block_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps, max_iters=args.max_iters,
            learning_rate=args.learning_rate,
            min_lr=args.min_lr if args.min_lr is not None else args.learning_rate / 10,
            warmup_iters=args.warmup_iters,
            lr_decay_iters=args.lr_decay_iters if args.lr_decay_iters is not None else args.max_iters,
            weight_decay=args.weight_decay, beta2=args.beta2, grad_clip=args.grad_clip,
            eval_interval=args.eval_interval, eval_iters=args.eval_iters, seed=args.seed, device=device,
            dtype=args.dtype, max_minutes=args.max_minutes, budget_minutes=args.budget_minutes,
            warmup_frac=args.warmup_frac, compile=args.compile, parallel=args.parallel, quiet=args.quiet,
        )
        if args.resume and not (out / "ckpt").exists() and not (out / "ckpt.old").exists():
            raise DodaiError(f"{out}: nothing to resume (no ckpt/ folder)")
        res = train(model, train_ids, val_ids, cfg, out, tokenizer=tok, bytes_per_token=bytes_per_token,
                    resume=args.resume, info=info)
    finally:
        distributed.shutdown(info)
    if info.is_main:
        keys = ("step", "train_loss", "val_loss", "val_ppl", "val_bpb", "elapsed_s")
        print(" ".join(f"{k}={res[k]:.4f}" if isinstance(res.get(k), float) else f"{k}={res.get(k)}" for k in keys))
        print(f"run folder: {out}", file=sys.stderr)
    return 0
