"""`dodai data pull`: markup strippers offline, and the real austen pull where apt-get exists."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from dodai.data import pull as P
from dodai.errors import DodaiError


def test_strip_roff_removes_requests_escapes_comments_and_tables():
    src = "\n".join([
        '.\\" a comment line',
        ".TH LS 1",
        ".SH 名前",
        "ls \\- ディレクトリの内容を一覧表示する",
        ".SH 書式",
        ".B ls",
        ".BR \\-e\\ file \\fIx\\fP",
        "[\\fIOPTION\\fR]... [\\fBFILE\\fP]...",
        ".TS",
        "tab(:);",
        "l l.",
        "a:b",
        ".TE",
        ".PP",
        "本文です。\\(em 終わり \\\" trailing comment",
    ])
    out = P.strip_roff(src)
    assert "名前" in out and "ls - ディレクトリの内容を一覧表示する" in out
    assert "[OPTION]... [FILE]..." in out
    assert "-e file x" in out  # escapes inside macro arguments are processed too
    assert "本文です。— 終わり" in out
    for bad in ("\\f", ".TH", "tab(:)", "a:b", "comment", ".PP", "\\-"):
        assert bad not in out


def test_strip_wiki_keeps_prose_drops_markup():
    src = ("{{Infobox|name=x}}'''Anarchism''' is a [[political philosophy]] that [[Advocacy|advocates]] "
           "self-governed societies.<ref>Some cite</ref> See [http://example.org the site].\n"
           "== History ==\n[[Category:Politics]]\n[[File:a.png|thumb|cap]]\n{| class=x\n|a\n|}\nEnd.")
    out = P.strip_wiki(src)
    assert out.startswith("Anarchism is a political philosophy that advocates self-governed societies.")
    assert "See the site." in out and "History" in out and "End." in out
    assert P.strip_wiki("x <math>a^2</math> y\n* .\n*\n* kept") == "x  y\n* kept"
    for bad in ("{{", "[[", "''", "<ref", "Category", "thumb", "Some cite", "class=x"):
        assert bad not in out


def test_unknown_and_unpulled_corpora_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DODAI_CACHE", str(tmp_path))
    with pytest.raises(DodaiError, match="known: austen"):
        P.pull("nope")
    from dodai.data import corpora

    with pytest.raises(DodaiError, match="dodai data pull austen"):
        corpora.load_corpus("austen")


def test_missing_apt_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(P.shutil, "which", lambda _name: None)
    with pytest.raises(DodaiError, match="apt-get/dpkg-deb are not available"):
        P.apt_fetch("r-cran-janeaustenr", tmp_path)


@pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
                    reason="needs apt-get and dpkg-deb (Debian/Ubuntu) and network access to the archive")
def test_pull_austen_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DODAI_CACHE", str(tmp_path))
    path = P.pull("austen")
    text = path.read_text(encoding="utf-8")
    assert "It is a truth universally acknowledged" in text  # Pride and Prejudice
    assert "Emma Woodhouse, handsome, clever, and rich" in text  # Emma
    assert 3_500_000 < path.stat().st_size < 4_800_000  # six novels, ~4 MB
    docs = json.loads(path.with_suffix(".docs.json").read_text(encoding="utf-8"))
    assert len(docs) > 200 and all(d.strip() for d in docs)  # chapters
    assert "\n\n".join(docs) + "\n" == text
    from dodai.data import corpora

    assert corpora.load_corpus("austen") == text
    assert corpora.corpus_documents("austen") == docs
    again = P.pull("austen").read_bytes()  # deterministic
    assert again == text.encode("utf-8")


@pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
                    reason="needs apt-get and dpkg-deb (Debian/Ubuntu) and network access to the archive")
def test_pull_ja_manpages_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DODAI_CACHE", str(tmp_path))
    path = P.pull("ja-manpages")
    docs = json.loads(path.with_suffix(".docs.json").read_text(encoding="utf-8"))
    assert len(docs) > 500
    text = path.read_text(encoding="utf-8")
    assert "名前" in text and "説明" in text  # the NAME / DESCRIPTION section headings survive
    japanese = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    assert japanese > 0.2 * len(text)
    # Markup left only where pages *document* roff (man(7), groff_man(7) quote their own macros).
    assert text.count("\\fB") < 10
    assert len(re.findall(r"^\.(SH|TH|PP|TP|B|I|BR|IR)\b", text, flags=re.M)) < 100


def test_pull_enwiki_sample_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("DODAI_CACHE", str(tmp_path))
    path = P.pull("enwiki-sample")
    docs = json.loads(path.with_suffix(".docs.json").read_text(encoding="utf-8"))
    assert len(docs) > 50 and docs[0].startswith("Anarchism\n\n")
    assert "Anarchism is a political philosophy" in docs[0]
    text = path.read_text(encoding="utf-8")
    assert text.count("[[") < 100 and text.count("{{") < 100 and "<ref" not in text
