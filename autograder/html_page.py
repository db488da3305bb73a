"""The static HTML pages the TA tools write (``report``, ``similarity``): one self-contained page each.

No scripts and no external resources, so a page opens the same from disk, from a web server or from an
archive mailed to a colleague. Every text that a submission influenced (student ids come from file
names, feedback from the student's code) goes through :func:`esc`.
"""
from __future__ import annotations

import html

from autograder.sanitize import clean

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
.meta { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1rem; }
figure { margin: 0; } figcaption { color: #57606a; font-size: .85rem; }
.bad { color: #cf222e; } .ok { color: #1a7f37; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; line-height: 1.35; margin: 0; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: .8rem; }
mark { background: #ffd8a8; } mark.m1 { background: #a5d8ff; } mark.m2 { background: #b2f2bb; } mark.m3 { background: #eebefa; }
.msg { font-family: ui-monospace, monospace; font-size: .8rem; white-space: pre-wrap; max-width: 640px; }
"""


def esc(text: object, limit: int = 2000, max_lines: int = 40) -> str:
    """``text`` cleaned (no control characters, bounded) and escaped for HTML."""
    return html.escape(clean(text, limit, max_lines))


def page(title: str, body: str) -> str:
    """A complete HTML document; the empty icon keeps the browser from asking the server for /favicon.ico."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title, 200)}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; ``rows`` hold HTML already escaped; columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
