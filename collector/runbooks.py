"""The runbooks (``docs/runbooks.md``) as web pages a phone can open, served by the collector.

Every alert's ``runbook_url`` is ``<runbook_base>/<alert name in lower case>``; with the default
base (Prometheus' external label ``runbook_base``, see ``collector/prometheus/prometheus.yml``) that
is this collector's ``/runbooks/<anchor>``, so the links work wherever the collector is reachable,
offline in the province included, without a repository viewer.

``docs/runbooks.md``: an introduction, then one ``## AlertName`` section per alert. A section is
English first; its Vietnamese part follows under the line ``### Tiếng Việt``. A page shows the
Vietnamese part first (the province IT staff read it), then the English one (``#vi``, ``#en``).

Only the Markdown the runbooks use is rendered: paragraphs, ``- `` lists (with continuation
lines), ``*emphasis*``, ``**strong**``, ```code``` and fenced code blocks. Everything is escaped.
"""
from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

DEFAULT_FILE = str(Path(__file__).resolve().parent.parent / "docs" / "runbooks.md")
VIETNAMESE_HEADING = "### Tiếng Việt"


@dataclass
class Section:
    name: str      # the heading, e.g. DiskFull
    anchor: str    # diskfull
    english: str   # Markdown
    vietnamese: str  # Markdown ('' when the section has no Vietnamese part)


def anchor_of(name: str) -> str:
    """GitHub's anchor of a heading (the runbooks' headings are alert names: their lower case)."""
    return re.sub(r"[^a-z0-9_-]", "", name.strip().lower().replace(" ", "-"))


def parse(text: str) -> "tuple[str, Dict[str, Section]]":
    """(introduction Markdown, sections by anchor) of a runbooks file."""
    parts = re.split(r"(?m)^## (.+)$", text)
    intro, sections = parts[0], {}
    for name, body in zip(parts[1::2], parts[2::2]):
        english, _, vietnamese = body.partition("\n" + VIETNAMESE_HEADING + "\n")
        section = Section(name.strip(), anchor_of(name), english.strip(), vietnamese.strip())
        sections[section.anchor] = section
    return intro, sections


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\*(.+?)\*")


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, strong, em = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif strong is not None:
            out.append(f"<strong>{_inline(strong)}</strong>")
        else:
            out.append(f"<em>{_inline(em)}</em>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def to_html(markdown: str) -> str:
    """HTML of the Markdown subset the runbooks use."""
    out: List[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif re.match(r"- ", line):
            items: List[str] = []
            while i < len(lines) and (lines[i].startswith("- ") or (lines[i].startswith("  ") and items)):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:].strip())
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("```", "#", "- ")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;max-width:46em;margin:0 auto;padding:0 .8em;line-height:1.45}"
          "code{background:#eee;padding:0 .2em;overflow-wrap:anywhere}pre{overflow-x:auto}"
          "section{border-top:1px solid #ccc;margin-top:1em}nav a{margin-right:1em}")


def _page(title: str, body: str, lang: str = "vi") -> str:
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>")


class Runbooks:
    """The runbooks file, re-read when it changes; ``index()`` and ``page(anchor)`` give HTML."""

    def __init__(self, path: str = DEFAULT_FILE):
        self.path = path
        self._stamp: Optional[tuple] = None
        self._intro = ""
        self._sections: Dict[str, Section] = {}

    def sections(self) -> Dict[str, Section]:
        st = os.stat(self.path)  # OSError: the caller answers 503
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                self._intro, self._sections = parse(f.read())
            self._stamp = stamp
        return self._sections

    def index(self) -> str:
        sections = self.sections()
        links = "".join(f'<li><a href="runbooks/{s.anchor}">{html.escape(s.name)}</a> '
                        f"{_inline(_title_vi(s))}</li>" for s in sections.values())
        return _page("Hướng dẫn xử lý cảnh báo / Runbooks",
                     "<h1>Hướng dẫn xử lý cảnh báo / Runbooks</h1>" + to_html(_strip_title(self._intro))
                     + f"<ul>{links}</ul>")

    def page(self, anchor: str) -> Optional[str]:
        """The HTML page of one section, or None when there is no such section."""
        section = self.sections().get(anchor)
        if section is None:
            return None
        nav = '<nav><a href="../runbooks">Mục lục / Index</a><a href="#vi">Tiếng Việt</a><a href="#en">English</a></nav>'
        vi = (f'<section id="vi" lang="vi"><h2>Tiếng Việt</h2>{to_html(section.vietnamese)}</section>'
              if section.vietnamese else "")
        en = f'<section id="en" lang="en"><h2>English</h2>{to_html(section.english)}</section>'
        return _page(section.name, f"{nav}<h1>{html.escape(section.name)}</h1>{vi}{en}")


def _strip_title(markdown: str) -> str:
    return re.sub(r"(?m)\A# .*\n", "", markdown.lstrip())


def _title_vi(section: Section) -> str:
    """The section's Vietnamese title: its opening ``*...*`` (every runbook section starts with one)."""
    m = re.match(r"\*([^*]+)\*", section.english)
    return f"*{m.group(1)}*" if m else ""
