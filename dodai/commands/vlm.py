"""``dodai vlm train`` / ``dodai vlm caption``: a small vision-language model on digit scenes (R9.2).

``dodai vlm train --out DIR`` composes scenes of real handwritten digit scans (scikit-learn's copy of the
UCI digits, see :mod:`dodai.data.digit_scenes`) with ground-truth captions and trains the ViT + projector +
GPT model of :mod:`dodai.models.vlm` on the training scans with R9.2's recipe (:data:`dodai.models.vlm_recipe.RECIPE`,
the defaults below): stage 1 trains the vision encoder as a digit tagger, stage 2 the captioner with that encoder
frozen (``--train-vision`` fine-tunes it too). It prints the held-out caption accuracy (exact, layout slot,
digit slots) and saves the model folder plus a few held-out scenes as ``DIR/samples/*.pgm`` to try ``caption``
on.

``dodai vlm caption --model DIR IMAGE...`` prints one greedy caption per image. Images: ``.npy`` (a 2-D
array, floats in [0, 1] or integers 0..255), ``.pgm`` (binary P5 or ASCII P2), or ``.png`` when Pillow is
installed; grayscale, ink bright on a dark background, exactly the model's image size (24x24).
"""

from __future__ import annotations

HELP = "vision-language model on digit scenes: `vlm train` trains one, `vlm caption` captions images"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = sub.add_parser("train", help="train a VLM on captioned digit scenes and save it")
    tr.add_argument("--out", required=True, help="model folder to write")
    from dodai.models.vlm_recipe import RECIPE

    r = RECIPE
    tr.add_argument("--pre-steps", type=int, default=r["pre_steps"],
                    help=f"stage 1: vision-encoder tagging steps, 0 to skip (default {r['pre_steps']})")
    tr.add_argument("--pre-lr", type=float, default=r["pre_lr"],
                    help=f"stage 1 peak learning rate (default {r['pre_lr']})")
    tr.add_argument("--curriculum-steps", type=int, default=r["curriculum_steps"],
                    help=f"stage 2: caption steps on 'large' scenes first (default {r['curriculum_steps']})")
    tr.add_argument("--steps", type=int, default=r["steps"],
                    help=f"stage 2: caption steps on every scene kind (default {r['steps']})")
    tr.add_argument("--batch-size", type=int, default=r["batch_size"],
                    help=f"scenes per step (default {r['batch_size']})")
    tr.add_argument("--lr", type=float, default=r["lr"], help=f"stage 2 peak learning rate (default {r['lr']})")
    tr.add_argument("--train-vision", action="store_true", default=r["train_vision"],
                    help="stage 2 fine-tunes the vision encoder too (default: frozen after stage 1)")
    tr.add_argument("--n-embd", type=int, default=128, help="LM width (default 128)")
    tr.add_argument("--n-layer", type=int, default=3, help="LM blocks (default 3)")
    tr.add_argument("--vit-width", type=int, default=64, help="vision Transformer width (default 64)")
    tr.add_argument("--vit-layers", type=int, default=2, help="vision Transformer blocks (default 2)")
    tr.add_argument("--stem", default="conv", choices=["conv", "linear"],
                    help="pixels to tokens: convolutional stem or ViT's linear patch embedding (default conv)")
    tr.add_argument("--patch-size", type=int, default=8, help="image-token cell side in pixels (default 8)")
    tr.add_argument("--eval-scenes", type=int, default=500, help="held-out scenes to score (default 500)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    tr.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    tr.add_argument("--compile", action="store_true",
                    help="torch.compile the model for the training step (on CPU needs a C++ compiler)")
    tr.add_argument("--quiet", action="store_true", help="no progress on stderr")

    cap = sub.add_parser("caption", help="print a caption for each image")
    cap.add_argument("images", nargs="+", metavar="IMAGE", help=".npy, .pgm or (with Pillow) .png files")
    cap.add_argument("--model", required=True, help="model folder written by `dodai vlm train`")
    cap.add_argument("--no-cache", action="store_true", help="decode without the KV cache (slow reference)")


def _train(args) -> int:
    import sys
    from pathlib import Path

    import torch

    from dodai.data.digit_scenes import CaptionTokenizer, load_digits, make_scenes, split_scans, stack_images, write_pgm
    from dodai.errors import DodaiError
    from dodai.experiments.r9_2 import _score
    from dodai.models.vlm import VLM, caption_batches, default_config, train_recipe

    for name in ("steps", "batch_size", "n_embd", "n_layer", "vit_width", "vit_layers", "grad_accum", "patch_size"):
        if getattr(args, name) < 1:
            raise DodaiError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("pre_steps", "curriculum_steps"):
        if getattr(args, name) < 0:
            raise DodaiError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.eval_scenes < 0 or not args.lr > 0 or not args.pre_lr > 0:
        raise DodaiError("--eval-scenes must be >= 0 and --lr, --pre-lr > 0")
    if args.n_embd % 4 or args.vit_width % 4:
        raise DodaiError("--n-embd and --vit-width must be multiples of 4 (4 attention heads)")
    if 24 % args.patch_size or (args.stem == "conv" and args.patch_size & (args.patch_size - 1)):
        raise DodaiError(f"--patch-size must divide the 24-pixel scenes (and be a power of two with the conv stem), "
                         f"got {args.patch_size}")
    if not args.train_vision and not args.pre_steps:
        print("note: --pre-steps 0 leaves the frozen vision encoder untrained; add --train-vision", file=sys.stderr)
    out = Path(args.out)
    images, labels = load_digits()
    split = split_scans(len(images), seed=args.seed)
    tok = CaptionTokenizer()
    torch.manual_seed(args.seed)
    model = VLM(default_config(tok.vocab_size, vit_width=args.vit_width, vit_layers=args.vit_layers,
                               n_embd=args.n_embd, n_layer=args.n_layer, stem=args.stem, patch_size=args.patch_size))
    rec = train_recipe(model, images, labels, split["train"], tok, pre_steps=args.pre_steps, pre_lr=args.pre_lr,
                       curriculum_steps=args.curriculum_steps, steps=args.steps, batch_size=args.batch_size,
                       lr=args.lr, train_vision=args.train_vision, seed=args.seed, progress=not args.quiet,
                       grad_accum=args.grad_accum, dtype=args.dtype, compile=args.compile)
    hist = rec["captions"]
    model.save(out, words=tok.itos)
    test = make_scenes(max(args.eval_scenes, 4), images, labels, split["test"], seed=args.seed + 1)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(test[:4]):
        write_pgm(out / "samples" / f"scene{i}.pgm", s.image)
    if args.eval_scenes:
        got = caption_batches(model, torch.from_numpy(stack_images(test[:args.eval_scenes])), tok)
        sc = _score(got, test[:args.eval_scenes])
        print(f"final loss {hist[-1][1]:.4f}; held-out exact caption match {sc['exact']:.1%}, layout "
              f"{sc['layout']:.1%}, digits {sc['digit']:.1%} per slot on {args.eval_scenes} scenes of unseen scans")
    print(f"saved {out} (try: dodai vlm caption --model {out} {out / 'samples' / 'scene0.pgm'})", file=sys.stderr)
    return 0


def _caption(args) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from dodai.data.digit_scenes import CaptionTokenizer, read_image
    from dodai.errors import DodaiError
    from dodai.models.vlm import VLM, caption

    model, words = VLM.load(Path(args.model))
    tok = CaptionTokenizer()
    if words is not None and words != tok.itos:
        raise DodaiError(f"{args.model}: the model's vocabulary is not the digit-scene caption vocabulary")
    s = model.config.image_size
    arrs = []
    for path in args.images:
        a = read_image(path)
        if a.shape != (s, s):
            raise DodaiError(f"{path}: image is {a.shape[0]}x{a.shape[1]}, the model expects {s}x{s}")
        arrs.append(a)
    x = torch.from_numpy(np.stack(arrs)[:, None].astype(np.float32))  # (B, 1, S, S)
    if model.config.channels != 1:
        raise DodaiError(f"{args.model}: the model expects {model.config.channels} channels; images are grayscale")
    for path, text in zip(args.images, caption(model, x, tok, use_cache=not args.no_cache)):
        print(f"{path}\t{text}")
    return 0


def run(args) -> int:
    return _train(args) if args.action == "train" else _caption(args)
