"""`dodai data pull NAME`: larger real corpora fetched from package registries (nothing is installed).

- ``austen``: Debian ``r-cran-janeaustenr`` — Jane Austen's six novels as R character vectors (one
  element per line) in the package's lazy-load data base ``data/Rdata.rdx/.rdb``, read with
  :mod:`dodai.data.rds` (no R needed). Documents are chapters (a novel is split before each line
  starting with ``CHAPTER``/``Chapter``), novels in publication order.
- ``ja-manpages``: Debian ``manpages-ja`` — the Japanese manual pages under ``usr/share/man/ja``
  (gzip'd roff), with roff markup stripped by :func:`strip_roff`; one document per page, sorted by path.
- ``enwiki-sample``: the shortened Wikipedia XML dump in gensim's wheel test data (``pip download
  --no-deps gensim``; the wheel zip is read, gensim is neither installed nor imported); wiki markup is
  stripped by :func:`strip_wiki`; one document per article.

Debian packages are fetched with ``apt-get download`` into a temporary folder and unpacked with
``dpkg-deb -x``. Output: ``cache_dir()/corpora/<name>.txt`` (documents joined by a blank line) and
``<name>.docs.json`` (the document list), both written atomically; extraction is deterministic.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import atomic_write_text
from dodai.paths import cache_dir

DOC_SEP = "\n\n"
AUSTEN_ORDER = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]
PULLABLE = {
    "austen": "Jane Austen's six novels (Debian r-cran-janeaustenr, R data parsed without R; ~4 MB)",
    "ja-manpages": "Japanese manual pages, roff stripped (Debian manpages-ja)",
    "enwiki-sample": "Wikipedia articles from gensim's wheel test data, markup stripped (PyPI gensim)",
}


def _log(msg: str) -> None:
    print(f"dodai: {msg}", file=sys.stderr)


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DodaiError(f"`{cmd[0]}` is not available on this machine (needed to fetch the package)") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DodaiError(f"could not run {cmd[0]}: {e}") from None


def apt_fetch(package: str, workdir: Path) -> Path:
    """Download ``package``'s .deb with ``apt-get download`` and unpack it; returns the unpacked root."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DodaiError(f"apt-get/dpkg-deb are not available here, so Debian package {package} cannot be fetched")
    r = _run(["apt-get", "download", package], workdir)
    if r.returncode != 0:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _log("package not found; running apt-get update once ...")
            _run(["apt-get", "update", "-q"], workdir, timeout=900)
            r = _run(["apt-get", "download", package], workdir)
        else:
            raise DodaiError(f"apt-get cannot download {package}; run `sudo apt-get update` and try again")
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DodaiError(f"apt-get cannot download {package} ({last})")
    root = workdir / "root"
    x = _run(["dpkg-deb", "-x", str(debs[0]), str(root)], workdir)
    if x.returncode != 0:
        raise DodaiError(f"dpkg-deb could not unpack {debs[0].name}: {x.stderr.strip()[:200]}")
    return root


# ---------------------------------------------------------------------------------------------- austen
_CHAPTER = re.compile(r"^(CHAPTER|Chapter)\b")


def austen_documents_from_root(root: Path) -> list[str]:
    from dodai.data.rds import RVector, read_lazyload_db

    rdx = root / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
    if not rdx.is_file():
        raise DodaiError(f"r-cran-janeaustenr: {rdx.relative_to(root)} is missing from the package")
    db = read_lazyload_db(rdx)
    docs: list[str] = []
    for name in AUSTEN_ORDER:
        lines = db.get(name)
        if not isinstance(lines, RVector) or not all(isinstance(s, str) or s is None for s in lines):
            raise DodaiError(f"r-cran-janeaustenr: {name} is not a character vector")
        chunk: list[str] = []
        for line in lines:
            line = (line or "").rstrip()
            if _CHAPTER.match(line) and any(c.strip() for c in chunk):
                docs.append(_tidy("\n".join(chunk)))
                chunk = []
            chunk.append(line)
        if any(c.strip() for c in chunk):
            docs.append(_tidy("\n".join(chunk)))
    return [d for d in docs if d]


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---------------------------------------------------------------------------------------- ja-manpages
_ESCAPES = [
    (re.compile(r"\\\".*"), ""),  # comment to end of line
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes \fB \f(CW \f[I]
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # string interpolation
    (re.compile(r"\\\((em|en)"), "—"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((oq|cq|aq)"), "'"),
    (re.compile(r"\\\(bu"), "•"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&|^%:c,/)]"), ""),
    (re.compile(r"\\[ ~0]"), " "),
    (re.compile(r"\\e"), "\\\\"),
]
_KEEP_ARGS = {"SH", "SS", "B", "I", "BI", "IB", "BR", "RB", "IR", "RI", "SM", "SB", "TP", "IP", "Nm", "Nd", "Sh"}


def _unescape(line: str) -> str:
    for pat, rep in _ESCAPES:
        line = pat.sub(rep, line)
    return line


def strip_roff(src: str) -> str:
    """Plain text of a man page: requests dropped (section/font macros keep their words), escapes removed,
    tables (``.TS``…``.TE``) and ignored blocks (``.ig``…``..``) skipped. Paragraph requests make blank lines."""
    out: list[str] = []
    skip_until: str | None = None
    for raw in src.replace("\r\n", "\n").split("\n"):
        line = raw
        if skip_until is not None:
            if line.strip().startswith(skip_until):
                skip_until = None
            continue
        if line.startswith((".\\\"", "'\\\"", '.\\"')) or line.strip() == ".":
            continue
        if line.startswith((".", "'")):
            m = re.match(r"^[.'][ \t]*(\S+)[ \t]*(.*)$", line)
            if not m:
                continue
            req, args = m.group(1), m.group(2)
            if req == "TS":
                skip_until = ".TE"
            elif req == "ig":
                skip_until = ".."
            elif req == "de":
                skip_until = ".."
            elif req in ("PP", "LP", "P", "sp", "br", "Pp") or req in ("SH", "SS", "Sh"):
                out.append("")
                if req in ("SH", "SS", "Sh") and args:
                    out.append(_unescape(args.replace('"', "")))
            elif req in _KEEP_ARGS and args:
                out.append(_unescape(" ".join(a.strip('"') for a in re.findall(r'"[^"]*"|\S+', args))).rstrip())
            continue
        out.append(_unescape(line).rstrip())
    return _tidy("\n".join(out))


def manpages_documents_from_root(root: Path) -> list[str]:
    base = root / "usr/share/man/ja"
    if not base.is_dir():
        raise DodaiError("manpages-ja: usr/share/man/ja is missing from the package")
    docs: list[str] = []
    for p in sorted(base.rglob("*.gz"), key=lambda q: q.relative_to(base).as_posix()):
        try:
            raw = gzip.decompress(p.read_bytes())
        except (OSError, EOFError):
            continue
        text = raw.decode("utf-8", errors="replace")
        if text.startswith(".so ") and len(text.strip().splitlines()) == 1:
            continue  # a link to another page
        doc = strip_roff(text)
        if len(doc) >= 40:
            docs.append(doc)
    return docs


# ------------------------------------------------------------------------------------- enwiki-sample
def strip_wiki(text: str) -> str:
    """Reasonable plain text from MediaWiki markup: templates, tables, refs, comments, files and categories
    dropped; ``[[a|b]]`` -> b, ``[url label]`` -> label, bold/italic quotes and heading ``=`` removed."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<(math|gallery|timeline|score)[^>]*>.*?</\1>", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for _ in range(5):  # nested templates / tables, innermost first
        text, n1 = re.subn(r"\{\{[^{}]*\}\}", "", text)
        text, n2 = re.subn(r"\{\|[^{}]*?\|\}", "", text, flags=re.S)
        if not (n1 or n2):
            break
    text = re.sub(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "",
                  text, flags=re.I)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = text.replace("&nbsp;", " ").replace("&ndash;", "–").replace("&mdash;", "—")
    lines = [ln.rstrip() for ln in text.split("\n") if not ln.lstrip().startswith(("{{", "}}", "|", "!"))]
    lines = [ln for ln in lines if not re.fullmatch(r"[*#:;]+[\s.,:;]*", ln)]  # list items emptied by stripping
    return _tidy("\n".join(lines))


def enwiki_documents_from_wheel(wheel: Path) -> list[str]:
    import html
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if "test_data/enwiki" in n and n.endswith(".bz2"))
        if not names:
            raise DodaiError(f"{wheel.name} holds no enwiki test dump")
        data = zf.read(names[0])
    try:
        xml = bz2.decompress(data)
    except (OSError, ValueError) as e:
        raise DodaiError(f"{names[0]}: corrupt bz2 ({e})") from None
    docs: list[str] = []
    for _, el in ET.iterparse(__import__("io").BytesIO(xml)):
        if el.tag.rsplit("}", 1)[-1] != "page":
            continue
        title = text = ""
        ns = "0"
        for sub in el.iter():
            tag = sub.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = sub.text or ""
            elif tag == "ns":
                ns = sub.text or "0"
            elif tag == "text":
                text = sub.text or ""
        el.clear()
        if ns != "0" or text.lstrip().upper().startswith("#REDIRECT"):
            continue
        body = strip_wiki(html.unescape(text))
        if len(body) >= 200:
            docs.append(f"{title}\n\n{body}")
    return docs


def _pip_wheel(spec: str, workdir: Path) -> Path:
    r = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "-q", "-d", str(workdir), spec], workdir, timeout=1800)
    wheels = sorted(workdir.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DodaiError(f"pip could not download {spec} ({last}); check network access to PyPI")
    return wheels[0]


# ------------------------------------------------------------------------------------------- pulling
def corpus_file(name: str) -> Path:
    return cache_dir() / "corpora" / f"{name}.txt"


def pull(name: str) -> Path:
    """Fetch corpus ``name`` into the cache (documents + text); returns the text path."""
    if name not in PULLABLE:
        raise DodaiError(f"unknown pullable corpus {name!r}; known: {', '.join(PULLABLE)}")
    out = corpus_file(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}.") as tmp:
        work = Path(tmp)
        _log(f"fetching {name} ...")
        if name == "austen":
            docs = austen_documents_from_root(apt_fetch("r-cran-janeaustenr", work))
        elif name == "ja-manpages":
            docs = manpages_documents_from_root(apt_fetch("manpages-ja", work))
        else:
            docs = enwiki_documents_from_wheel(_pip_wheel("gensim", work))
    if not docs:
        raise DodaiError(f"{name}: no documents were extracted")
    atomic_write_text(out.with_suffix(".docs.json"), json.dumps(docs, ensure_ascii=False))
    atomic_write_text(out, DOC_SEP.join(docs) + "\n")
    return out


def not_pulled(name: str) -> str:
    """Build hook for corpora.py: pulled corpora are never fetched implicitly."""
    raise DodaiError(f"corpus {name!r} is not pulled yet; run `dodai data pull {name}`")
