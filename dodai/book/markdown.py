"""The markdown subset of dodai's reports and docstrings, as HTML (every piece of text escaped).

No markdown library: this handles exactly what :class:`dodai.report.Report` and the experiments' docstrings
write — headings, paragraphs, ``-`` lists, pipe tables (``\\|`` is a literal bar inside a cell, as
:func:`dodai.report.markdown_table` writes it), images, fenced code, ``**bold**``, ``*emphasis*``, inline code
in single or double backticks, Sphinx roles (``:func:`name```, shown as code) and relative links.
"""

from __future__ import annotations

import html
import re

_IMG = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc|ref):`~?([^`]+)`")
_CODE = re.compile(r"``(.+?)``|`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _safe_href(href: str) -> str | None:
    """Only relative links (reports and pages link their own files); anything with a scheme is dropped."""
    if "://" in href or href.startswith(("/", "javascript:", "data:", "//")) or ":" in href.split("/")[0]:
        return None
    return href


def inline(text: str) -> str:
    """Escape, then code spans (kept verbatim), roles, links, **bold** and *emphasis*."""
    text = _ROLE.sub(lambda m: "``" + m.group(1) + "``", text)
    codes: list[str] = []

    def keep(m):
        codes.append(m.group(1) if m.group(1) is not None else m.group(2))
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep, text)
    out = html.escape(text, quote=False)

    def link(m):
        href = _safe_href(html.unescape(m.group(2)))
        if href is None:
            return m.group(1)
        return f'<a href="{html.escape(href)}">{m.group(1)}</a>'

    out = _LINK.sub(link, out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub("\x00(\\d+)\x00", lambda m: "<code>" + html.escape(codes[int(m.group(1))]) + "</code>", out)


def cells(line: str) -> list[str]:
    """Split a pipe-table row on unescaped bars; ``\\|`` becomes a literal bar."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def to_html(md: str, image_prefix: str = "") -> str:
    lines = md.splitlines()
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    i = 0

    def flush():
        if para:
            out.append("<p>" + inline(" ".join(para)) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in items) + "</ul>")
            items.clear()

    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("```"):
            flush()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(body)) + "</code></pre>")
        elif s.startswith("#"):
            flush()
            level = min(len(s) - len(s.lstrip("#")), 6)
            out.append(f"<h{level}>{inline(s[level:].strip())}</h{level}>")
        elif s.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            i -= 1
            body = [r for r in rows if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]
            if body:
                head, rest = body[0], body[1:]
                n = len(head)
                rest = [(r + [""] * n)[:n] for r in rest]  # every row as wide as the header
                out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead>"
                           "<tbody>" + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                                               for r in rest) + "</tbody></table>")
        elif _IMG.match(s):
            flush()
            alt, src = _IMG.match(s).groups()
            src = _safe_href(src) or ""  # reports only reference their own files
            out.append(f'<figure><img src="{html.escape(image_prefix + src)}" alt="{html.escape(alt)}">'
                       f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif re.match(r"^[-*] ", s):
            if para:
                out.append("<p>" + inline(" ".join(para)) + "</p>")
                para.clear()
            items.append(s[2:])
        elif not s:
            flush()
        elif items and lines[i].startswith("  "):
            items[-1] += " " + s  # a list item continued on the next line
        else:
            if items:
                flush()
            para.append(s)
        i += 1
    flush()
    return "\n".join(out)
