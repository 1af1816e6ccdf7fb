"""``dodai vlm train`` / ``dodai vlm caption``: a small vision-language model on digit scenes (R9.2).

``dodai vlm train --out DIR`` composes scenes of real handwritten digit scans (scikit-learn's copy of the
UCI digits, see :mod:`dodai.data.digit_scenes`) with ground-truth captions, trains the ViT + projector +
GPT model of :mod:`dodai.models.vlm` on the training scans, prints the held-out caption accuracy, and
saves the model folder plus a few held-out scenes as ``DIR/samples/*.pgm`` to try ``caption`` on.

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
    tr.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    tr.add_argument("--batch-size", type=int, default=64, help="scenes per step (default 64)")
    tr.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    tr.add_argument("--n-embd", type=int, default=128, help="LM width (default 128)")
    tr.add_argument("--n-layer", type=int, default=3, help="LM blocks (default 3)")
    tr.add_argument("--vit-width", type=int, default=64, help="vision Transformer width (default 64)")
    tr.add_argument("--vit-layers", type=int, default=2, help="vision Transformer blocks (default 2)")
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

    import numpy as np
    import torch

    from dodai.data.digit_scenes import CaptionTokenizer, load_digits, make_scenes, split_scans, stack_images, write_pgm
    from dodai.errors import DodaiError
    from dodai.models.vlm import VLM, caption_batches, default_config, fit, scene_batches

    for name in ("steps", "batch_size", "n_embd", "n_layer", "vit_width", "vit_layers", "grad_accum"):
        if getattr(args, name) < 1:
            raise DodaiError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_scenes < 0 or not args.lr > 0:
        raise DodaiError("--eval-scenes must be >= 0 and --lr > 0")
    if args.n_embd % 4 or args.vit_width % 4:
        raise DodaiError("--n-embd and --vit-width must be multiples of 4 (4 attention heads)")
    out = Path(args.out)
    images, labels = load_digits()
    split = split_scans(len(images), seed=args.seed)
    tok = CaptionTokenizer()
    torch.manual_seed(args.seed)
    model = VLM(default_config(tok.vocab_size, vit_width=args.vit_width, vit_layers=args.vit_layers,
                               n_embd=args.n_embd, n_layer=args.n_layer))
    hist = fit(model, scene_batches(images, labels, split["train"], args.batch_size, tok, seed=args.seed),
               args.steps, lr=args.lr, progress=not args.quiet, grad_accum=args.grad_accum, dtype=args.dtype,
               compile=args.compile)
    model.save(out, words=tok.itos)
    test = make_scenes(max(args.eval_scenes, 4), images, labels, split["test"], seed=args.seed + 1)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(test[:4]):
        write_pgm(out / "samples" / f"scene{i}.pgm", s.image)
    if args.eval_scenes:
        got = caption_batches(model, torch.from_numpy(stack_images(test[:args.eval_scenes])), tok)
        exact = float(np.mean([g == s.caption for g, s in zip(got, test)]))
        print(f"final loss {hist[-1][1]:.4f}; held-out exact caption match {exact:.1%} "
              f"on {args.eval_scenes} scenes of unseen scans")
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
