"""Digit scenes: real handwritten digit scans composed on a canvas, with captions from the ground truth (R9.2).

Source images: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak 1998) as
scikit-learn ships it, ``sklearn/datasets/data/digits.csv.gz``: 1,797 real scans, each 8x8 pixels with
intensities 0..16, and its label (65 comma-separated integers per line). dodai never imports scikit-learn nor
reads an installed package's files: it fetches the scikit-learn wheel once with ``pip download --no-deps``
(never installed), keeps the 50 kB data file in its cache and deletes the wheel.

A scene is a ``CANVAS`` x ``CANVAS`` float image (ink 1, background 0) holding 1-3 scans, and one caption
generated from where they were put:

    layout          caption                              placement
    "left of"       "a 3 left of a 7"                    two scans side by side (vertical jitter <= 3 px)
    "above"         "a 3 above a 7"                      two scans stacked (horizontal jitter <= 3 px)
    "top left" ...  "a small 2 at the top left"          one 8x8 scan in a corner region (4 corners)
    "large"         "a large 5"                          one scan upscaled 2x (16x16), anywhere
    "row"           "digits 5 1 and 9 in a row"          three scans at x = 0, 8, 16 (vertical jitter)

Captions are a closed word-level language (:class:`CaptionTokenizer`), so "exact match" and per-slot
scores (:func:`parse_caption`: the layout slot and each digit slot) are well defined.

Splits are by **source scan** (:func:`split_scans`): a test scene is composed only of scans that no
training scene ever used, so a model cannot pass by remembering pixels.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dodai.errors import DodaiError

CANVAS = 24  # scene side in pixels
SCAN = 8  # a source scan's side in pixels
KINDS = ("left of", "above", "corner", "large", "row")  # scene kinds, drawn uniformly
CORNERS = ("top left", "top right", "bottom left", "bottom right")
LAYOUTS = ("left of", "above", *CORNERS, "large", "row")  # the layout slot of a caption
N_DIGITS = {"left of": 2, "above": 2, "large": 1, "row": 3, **{c: 1 for c in CORNERS}}
DIGITS_FILE = "digits.csv.gz"
SKLEARN_WHEEL = "scikit-learn"


# ----------------------------------------------------------------------------------------------- source scans
def parse_digits_csv(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """gzip'd CSV bytes -> images (N, 8, 8) float32 in [0, 1], labels (N,) int64. Strict: DodaiError on junk."""
    try:
        text = gzip.decompress(data).decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        raise DodaiError(f"{DIGITS_FILE}: not a gzip'd ASCII CSV file") from None
    rows = [ln for ln in text.splitlines() if ln.strip()]
    if not rows:
        raise DodaiError(f"{DIGITS_FILE}: no rows")
    try:
        arr = np.array([[int(v) for v in ln.split(",")] for ln in rows], dtype=np.int64)
    except ValueError:
        raise DodaiError(f"{DIGITS_FILE}: every row must be 65 comma-separated integers") from None
    if arr.ndim != 2 or arr.shape[1] != SCAN * SCAN + 1:
        raise DodaiError(f"{DIGITS_FILE}: every row must be 65 comma-separated integers")
    pix, labels = arr[:, :-1], arr[:, -1]
    if pix.min() < 0 or pix.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise DodaiError(f"{DIGITS_FILE}: pixel values must be 0..16 and labels 0..9")
    return (pix.reshape(-1, SCAN, SCAN) / 16.0).astype(np.float32), labels


def digits_path(download: bool = True) -> Path:
    """Where digits.csv.gz is: dodai's cache, filled (``download``) from the pip-downloaded wheel."""
    from dodai.io import atomic_write_bytes
    from dodai.paths import cache_dir

    cached = cache_dir() / "data" / "digits" / DIGITS_FILE
    if cached.is_file():
        return cached
    if not download:
        raise DodaiError(f"{DIGITS_FILE} is not in dodai's cache ({cached.parent}); allow the download once")
    folder = cache_dir() / "data" / "digits"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"fetching the {SKLEARN_WHEEL} wheel for {DIGITS_FILE} (pip download --no-deps) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                        "-d", str(folder), SKLEARN_WHEEL], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise DodaiError(f"could not download the {SKLEARN_WHEEL} wheel for {DIGITS_FILE}: {e}") from None
    for whl in sorted(folder.glob("scikit_learn-*.whl")):
        with zipfile.ZipFile(whl) as z:
            atomic_write_bytes(cached, z.read(f"sklearn/datasets/data/{DIGITS_FILE}"))
        whl.unlink()  # keep only the 50 kB data file, not the 10 MB wheel
        return cached
    raise DodaiError(f"pip download gave no {SKLEARN_WHEEL} wheel")


def load_digits(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real scans: images (N, 8, 8) float32 in [0, 1] and labels (N,)."""
    p = Path(path) if path is not None else digits_path()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DodaiError(f"{p}: cannot read ({e.strerror})") from None
    return parse_digits_csv(data)


def split_scans(n: int, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> dict[str, np.ndarray]:
    """Disjoint index sets {"train", "val", "test"} over n scans (a seeded permutation): train gets
    fractions[0], val fractions[1], test the rest. Scenes of a split use only that split's scans."""
    if n < 3:
        raise DodaiError(f"need at least 3 scans to split, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    a = max(1, int(round(fractions[0] * n)))
    b = max(a + 1, min(n - 1, a + int(round(fractions[1] * n))))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


# ----------------------------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    image: np.ndarray  # (CANVAS, CANVAS) float32 in [0, 1]
    caption: str
    layout: str  # one of LAYOUTS
    digits: tuple[int, ...]  # in caption order
    scans: tuple[int, ...]  # indices of the source scans used
    boxes: tuple[tuple[int, int, int], ...] = ()  # (x, y, side) of each pasted scan, in caption order


def caption_for(layout: str, digits: tuple[int, ...]) -> str:
    """The ground-truth caption of a layout and its digits (caption order)."""
    if layout not in LAYOUTS or len(digits) != N_DIGITS[layout]:
        raise DodaiError(f"no caption for layout {layout!r} with digits {digits!r}")
    d = [str(x) for x in digits]
    if layout in ("left of", "above"):
        return f"a {d[0]} {layout} a {d[1]}"
    if layout in CORNERS:
        return f"a small {d[0]} at the {layout}"
    if layout == "large":
        return f"a large {d[0]}"
    return f"digits {d[0]} {d[1]} and {d[2]} in a row"


def parse_caption(text: str) -> tuple[str, tuple[int, ...]] | None:
    """Inverse of :func:`caption_for`: (layout, digits), or None when ``text`` is not a valid caption."""
    w = text.split()
    digit = [x.isdigit() and len(x) == 1 for x in w]
    if len(w) == 5 and w[0] == w[3] == "a" and digit[1] and digit[4] and w[2] == "above":
        return "above", (int(w[1]), int(w[4]))
    if len(w) == 6 and w[0] == w[4] == "a" and digit[1] and digit[5] and w[2:4] == ["left", "of"]:
        return "left of", (int(w[1]), int(w[5]))
    if len(w) == 7 and w[:2] == ["a", "small"] and digit[2] and w[3:5] == ["at", "the"]:
        corner = " ".join(w[5:])
        if corner in CORNERS:
            return corner, (int(w[2]),)
    if len(w) == 3 and w[:2] == ["a", "large"] and digit[2]:
        return "large", (int(w[2]),)
    if (len(w) == 8 and w[0] == "digits" and digit[1] and digit[2] and w[3] == "and" and digit[4]
            and w[5:] == ["in", "a", "row"]):
        return "row", (int(w[1]), int(w[2]), int(w[4]))
    return None


def _paste(canvas: np.ndarray, scan: np.ndarray, x: int, y: int) -> None:
    h, w = scan.shape
    canvas[y:y + h, x:x + w] = np.maximum(canvas[y:y + h, x:x + w], scan)  # overlapping ink: the darker wins


def make_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, pool: np.ndarray,
               kind: str | None = None) -> Scene:
    """One random scene from the scans whose indices are in ``pool`` (positions per the module table)."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise DodaiError(f"unknown scene kind {kind!r}; expected one of {KINDS}")
    hi = CANVAS - SCAN  # largest top-left coordinate of an 8x8 scan
    n = {"left of": 2, "above": 2, "corner": 1, "large": 1, "row": 3}[kind]
    scans = tuple(int(s) for s in rng.choice(pool, size=n, replace=True))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)

    def jitter(v):  # v moved by up to 3 px, kept on the canvas
        return int(np.clip(v + rng.integers(-3, 4), 0, hi))

    if kind in ("left of", "above"):
        a = int(rng.integers(0, hi - SCAN))  # first scan's coordinate along the layout axis
        b = int(rng.integers(a + SCAN + 1, hi + 1))  # the second one starts at least 1 px after the first ends
        c = int(rng.integers(0, hi + 1))
        c2 = jitter(c)
        xy = [(a, c), (b, c2)] if kind == "left of" else [(c, a), (c2, b)]
        for s, (x, y) in zip(scans, xy):
            _paste(canvas, images[s], x, y)
        boxes = [(x, y, SCAN) for x, y in xy]
        layout = kind
    elif kind == "corner":
        layout = CORNERS[int(rng.integers(4))]
        x = int(rng.integers(0, 5)) if layout.endswith("left") else int(rng.integers(hi - 4, hi + 1))
        y = int(rng.integers(0, 5)) if layout.startswith("top") else int(rng.integers(hi - 4, hi + 1))
        _paste(canvas, images[scans[0]], x, y)
        boxes = [(x, y, SCAN)]
    elif kind == "large":
        big = np.kron(images[scans[0]], np.ones((2, 2), dtype=np.float32))  # (16, 16) nearest-neighbour 2x
        x, y = (int(v) for v in rng.integers(0, CANVAS - 2 * SCAN + 1, size=2))
        _paste(canvas, big, x, y)
        boxes = [(x, y, 2 * SCAN)]
        layout = "large"
    else:  # row
        y = int(rng.integers(0, hi + 1))
        boxes = [(SCAN * i, jitter(y), SCAN) for i in range(3)]
        for s, (x, y, _) in zip(scans, boxes):
            _paste(canvas, images[s], x, y)
        layout = "row"
    digits = tuple(int(labels[s]) for s in scans)
    return Scene(canvas, caption_for(layout, digits), layout, digits, scans, tuple(boxes))


def make_scenes(n: int, images: np.ndarray, labels: np.ndarray, pool: np.ndarray, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, images, labels, pool) for _ in range(n)]


# ----------------------------------------------------------------------------------------------- tokenizer
class CaptionTokenizer:
    """Word-level tokenizer of the caption language: one id per word, plus <pad>, <bos>, <eos>.

    Follows dodai's tokenizer interface (encode / decode / vocab_size / special_tokens / eos_id).
    """

    WORDS = ("a", "small", "large", "at", "the", "left", "right", "top", "bottom", "of", "above", "digits",
             "and", "in", "row", *[str(d) for d in range(10)])

    def __init__(self):
        self.itos = ["<pad>", "<bos>", "<eos>", *self.WORDS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.special_tokens = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            if w not in self.stoi or w in self.special_tokens:
                raise DodaiError(f"word {w!r} is not in the caption vocabulary")
            ids.append(self.stoi[w])
        return ids

    def decode(self, ids: list[int]) -> str:
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.itos):
                raise DodaiError(f"token id {i} out of range [0, {len(self.itos)})")
            if int(i) not in (self.pad_id, self.bos_id, self.eos_id):
                out.append(self.itos[int(i)])
        return " ".join(out)


def caption_batch(captions: list[str], tok: CaptionTokenizer, length: int | None = None):
    """Teacher-forcing arrays for captions: inputs ``<bos> w1 .. wk <pad>..`` and targets ``w1 .. wk <eos>
    -100..`` (-100 = no loss), both (B, T) int64 numpy arrays, T = ``length`` or the longest caption + 1."""
    enc = [tok.encode(c) for c in captions]
    t = length or max(len(e) for e in enc) + 1
    if any(len(e) + 1 > t for e in enc):
        raise DodaiError(f"a caption is longer than {t - 1} words")
    inp = np.full((len(enc), t), tok.pad_id, dtype=np.int64)
    tgt = np.full((len(enc), t), -100, dtype=np.int64)
    for r, e in enumerate(enc):
        inp[r, 0] = tok.bos_id
        inp[r, 1:len(e) + 1] = e
        tgt[r, :len(e)] = e
        tgt[r, len(e)] = tok.eos_id
    return inp, tgt


NO_DIGIT = 10  # the token tag of a cell that holds no digit's centre


def token_tags(scene: Scene, patch: int) -> np.ndarray:
    """(N,) int64 over the scene's (CANVAS / patch)^2 token grid (row-major): the digit whose box centre lies in
    that cell, else ``NO_DIGIT``. The dense targets of the vision encoder's stage-1 pre-training."""
    if CANVAS % patch:
        raise DodaiError(f"patch {patch} does not divide the {CANVAS}-pixel canvas")
    g = CANVAS // patch
    tags = np.full(g * g, NO_DIGIT, dtype=np.int64)
    for (x, y, side), d in zip(scene.boxes, scene.digits):
        cx, cy = min(x + side // 2, CANVAS - 1), min(y + side // 2, CANVAS - 1)
        tags[(cy // patch) * g + cx // patch] = d
    return tags


def stack_images(scenes: list[Scene]) -> np.ndarray:
    """(B, 1, CANVAS, CANVAS) float32 from scenes."""
    return np.stack([s.image for s in scenes])[:, None]


def read_image(path: str | Path) -> np.ndarray:
    """A grayscale image file -> (H, W) float32 in [0, 1], ink bright. Accepts ``.npy`` (2-D, values in [0, 1],
    or integers 0..255), binary or ASCII ``.pgm`` (P5 / P2), and ``.png`` when Pillow is installed."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DodaiError(f"{p}: cannot read ({e.strerror})") from None
    if suffix == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise DodaiError(f"{p}: not a valid .npy array file") from None
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        if arr.ndim != 2 or arr.size == 0 or not numeric:
            raise DodaiError(f"{p}: expected a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.integer):
            if arr.min() < 0 or arr.max() > 255:
                raise DodaiError(f"{p}: integer pixels must be 0..255")
            return (arr / 255.0).astype(np.float32)
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise DodaiError(f"{p}: float pixels must be finite and in [0, 1]")
        return arr
    if suffix == ".pgm":
        return _parse_pgm(data, p)
    if suffix == ".png":
        try:
            from PIL import Image
        except ImportError:
            raise DodaiError(f"{p}: reading PNG needs Pillow; use .npy or .pgm") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                return (np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
        except Exception as e:  # Pillow raises many types on corrupt files
            raise DodaiError(f"{p}: not a readable PNG ({type(e).__name__})") from None
    raise DodaiError(f"{p}: unsupported image type {suffix or '(none)'}; use .npy, .pgm or .png")


def _parse_pgm(data: bytes, p: Path) -> np.ndarray:
    """Netpbm PGM, P5 (binary, maxval <= 255 or 16-bit) or P2 (ASCII); '#' comments in the header."""
    magic = data[:2]
    if magic not in (b"P5", b"P2"):
        raise DodaiError(f"{p}: not a PGM file (magic P5 or P2)")
    fields, i = [], 2
    while len(fields) < 3:  # width, height, maxval, separated by whitespace and comments
        while i < len(data) and data[i:i + 1].isspace():
            i += 1
        if i < len(data) and data[i:i + 1] == b"#":
            while i < len(data) and data[i:i + 1] not in (b"\n", b"\r"):
                i += 1
            continue
        j = i
        while j < len(data) and data[j:j + 1].isdigit():
            j += 1
        if j == i or j - i > 9:
            raise DodaiError(f"{p}: truncated or corrupt PGM header")
        fields.append(int(data[i:j]))
        i = j
    w, h, maxval = fields
    if not (0 < w <= 4096 and 0 < h <= 4096 and 0 < maxval < 65536):
        raise DodaiError(f"{p}: PGM size {w}x{h} or maxval {maxval} out of range")
    if magic == b"P5":
        i += 1  # exactly one whitespace byte before the raster
        nbytes = 2 if maxval > 255 else 1
        raw = data[i:i + w * h * nbytes]
        if len(raw) != w * h * nbytes:
            raise DodaiError(f"{p}: PGM raster truncated ({len(raw)} of {w * h * nbytes} bytes)")
        arr = np.frombuffer(raw, dtype=">u2" if nbytes == 2 else np.uint8).reshape(h, w)
    else:
        try:
            vals = [int(v) for v in data[i:].split()]
        except ValueError:
            raise DodaiError(f"{p}: ASCII PGM raster holds a non-integer") from None
        if len(vals) < w * h:
            raise DodaiError(f"{p}: PGM raster truncated ({len(vals)} of {w * h} values)")
        arr = np.array(vals[:w * h], dtype=np.int64).reshape(h, w)
    if arr.max() > maxval:
        raise DodaiError(f"{p}: a PGM pixel exceeds maxval {maxval}")
    return (arr.astype(np.float32) / maxval).astype(np.float32)


def write_pgm(path: str | Path, image: np.ndarray) -> None:
    """(H, W) float image in [0, 1] -> binary PGM (P5, maxval 255)."""
    from dodai.io import atomic_write_bytes

    img = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    h, w = img.shape
    atomic_write_bytes(path, f"P5\n{w} {h}\n255\n".encode() + img.tobytes())
