"""R9.3 web page: the three steps, every topic's items, and the step-3 demos rendered from their reports."""

import pytest

from dodai.errors import DodaiError
from dodai.site import STEPS, build_page, markdown_to_html


def test_markdown_subset_and_escaping():
    md = ("# Title <b>\n\nSome **bold** and `code` & more\ntext.\n\n| a | b |\n|---|---|\n| 1 | <x> |\n\n"
          "![a plot](loss.png)\n\n![evil](https://evil.example/x.png)\n\n```\n<script>x</script>\n```\n")
    h = markdown_to_html(md, image_prefix="demos/R1/")
    assert "<h1>Title &lt;b&gt;</h1>" in h
    assert "<p>Some <strong>bold</strong> and <code>code</code> &amp; more text.</p>" in h
    assert "<th>a</th><th>b</th>" in h and "<td>&lt;x&gt;</td>" in h and "---" not in h
    assert 'src="demos/R1/loss.png"' in h
    assert "evil.example" not in h and 'src="demos/R1/"' in h  # foreign image sources dropped
    assert "&lt;script&gt;x&lt;/script&gt;" in h and "<script>" not in h


def test_steps_name_real_items():
    from dodai import roadmap

    ids = {it.id for it in roadmap.ITEMS}
    assert len(STEPS) == 3
    assert all(i in ids for _, _, topics in STEPS for _, _, its in topics for i in its)


def test_page_with_the_playground_demo(tmp_path):
    index = build_page(tmp_path / "site", quick=True, demos=["R5.4"])
    page = index.read_text(encoding="utf-8")
    assert "ステップ1：入門" in page and "ステップ3：実践" in page
    assert "The sampling / temperature playground (R5.4)" in page
    assert "demos/R5.4/distributions.png" in page and (tmp_path / "site/demos/R5.4/distributions.png").is_file()
    build_page(tmp_path / "site", quick=True, demos=["R5.4"])  # rebuilding its own folder is fine


def test_page_refuses_a_foreign_index(tmp_path):
    (tmp_path / "index.html").write_text("mine")
    with pytest.raises(DodaiError):
        build_page(tmp_path, quick=True, demos=[])
    assert (tmp_path / "index.html").read_text() == "mine"


def test_report_markup_renders_instead_of_showing_raw():
    """Bars inside cells, Sphinx roles and *emphasis* from docstrings (R9.3's report had all three)."""
    from dodai.report import markdown_table

    md = markdown_table([{"sentence": "a", "BERT max |Δlogit| at blank": 0.5, "GPT max |Δlogit| at blank": 0.0}])
    h = markdown_to_html(md + "\nSee :func:`dodai.experiments.r6_1.pretrain_small_bert`, from *both* sides.\n")
    head = h.split("</thead>")[0]
    assert head.count("<th>") == 3 and "<th>BERT max |Δlogit| at blank</th>" in head
    assert h.split("<tbody>")[1].split("</tr>")[0].count("<td>") == 3
    assert "<code>dodai.experiments.r6_1.pretrain_small_bert</code>" in h and ":func:" not in h
    assert "<em>both</em>" in h and "*both*" not in h
