"""Rendering of the report: tables, figure markup, the CSS, and the assembly of index.html and report.md."""

from __future__ import annotations

import html

from ._report_context import Context, Section

__all__ = ["code_html", "code_md", "figure_html", "figure_md", "page_html", "page_md", "table_html", "table_md"]


# --------------------------------------------------------------------------------------------
# pieces of a section
# --------------------------------------------------------------------------------------------


def figure_html(name: str, caption: str) -> str:
    """A figure (PNG next to the page) with its caption."""
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def figure_md(name: str, caption: str) -> str:
    """Markdown for a figure and its caption."""
    return f"![{caption}]({name})\n\n*{caption}*\n"


def table_html(header: list[str], rows: list[list[str]], cls: str = "", *, row_headers: bool = False) -> str:
    """A table whose cells are already HTML, in a wrapper that scrolls sideways on a narrow screen.

    Header cells get ``scope="col"``; with ``row_headers`` the first cell of each row is a
    ``<th scope="row">``.
    """
    head = "".join(f'<th scope="col">{h}</th>' for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""

    def tr(row: list[str]) -> str:
        if row_headers and row:
            return f'<tr><th scope="row">{row[0]}</th>' + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>"
        return "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"

    body = "".join(tr(row) for row in rows)
    return f'<div class="scroll"><table class="{cls}">{thead}<tbody>{body}</tbody></table></div>'


def code_html(source: str, caption: str) -> str:
    """A Python listing: highlighted by Pygments when installed (plain ``<pre>`` otherwise), with a copy button.

    The highlighting is inline (classes styled by the page's CSS): the page stays offline.
    """
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        pre = f'<pre class="code"><code>{html.escape(source)}</code></pre>'
    else:
        pre = highlight(source, PythonLexer(), HtmlFormatter(nowrap=True))
        pre = f'<pre class="code hl"><code>{pre}</code></pre>'
    return (
        f'<figure class="listing"><figcaption><span>{caption}</span>'
        '<button type="button" class="copy" title="copy the code to the clipboard">copy</button></figcaption>'
        f"{pre}</figure>"
    )


def code_md(source: str, caption: str) -> str:
    """Markdown for a listing and its caption."""
    return f"{html.unescape(_strip_tags(caption))}:\n\n```python\n{source.rstrip()}\n```\n"


def _strip_tags(text: str) -> str:
    out, inside = [], False
    for ch in text:
        if ch == "<":
            inside = True
        elif ch == ">":
            inside = False
        elif not inside:
            out.append(ch)
    return "".join(out)


def _pygments_css() -> str:
    """The Pygments classes' colours for ``pre.hl`` ('' without Pygments)."""
    try:
        from pygments.formatters import HtmlFormatter
    except ImportError:
        return ""
    return HtmlFormatter(style="default").get_style_defs("pre.hl")


def table_md(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------

_CSS = """
:root { --fg:#1d232a; --muted:#5b6672; --line:#d8dee4; --ok:#1a7f37; --bad:#c0392b; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 21px; margin-top: 40px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); } h4 { margin: 0 0 6px; font-size: 15px; }
h3 { font-size: 16.5px; margin: 22px 0 4px; }
table.pivot td small { color: var(--muted); font-size: 12px; } table.pivot th[scope=row] { white-space: nowrap; }
.meta { color: var(--muted); margin: 0 0 16px; }
nav ol { margin: 6px 0 0; padding-left: 22px; columns: 2; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 8px 10px; overflow-x: auto; margin: 6px 0; }
table { border-collapse: collapse; margin: 10px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
table.num td { font-variant-numeric: tabular-nums; }
table.kv td:first-child { color: var(--muted); }
figure { margin: 14px 0 20px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.verdict { font-weight: 600; } .ok { color: var(--ok); } .bad { color: var(--bad); }
.verdict .reason { font-weight: 400; }
.warn { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
p.verdict.ok::before { content: "\\2714\\00a0"; } p.verdict.bad::before { content: "\\2718\\00a0"; }
.mark { color: var(--bad); font-weight: 700; }
table.bc { margin: 4px 0; font-size: 13px; } table.bc th { text-align: left; white-space: nowrap; }
table.bc td { text-align: center; vertical-align: middle; min-width: 40px; padding: 3px 6px; }
table.bc td.why { font-size: 11px; color: var(--muted); white-space: nowrap; }
table.bc td.stretch { background: #e8f1fb; } table.bc td.conflict { background: #fdecea; color: var(--bad); font-weight: 600; }
table.bc tr.res td { font-weight: 600; } table.bc th small { font-weight: 400; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(520px, 100%), 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto; }
.card p.verdict { margin: 4px 0 0; font-size: 14px; }
.extra { display: inline-block; background: #eef2ff; color: #3949ab; border: 1px solid #c5cae9; border-radius: 3px;
         font-size: 11px; font-weight: 700; padding: 0 5px; text-transform: uppercase; letter-spacing: .04em; }
table.extra-table { border-left: 4px solid #c5cae9; }
details { margin: 4px 0; } summary { cursor: pointer; color: var(--accent); }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
.scroll { overflow-x: auto; max-width: 100%; } .scroll > table { margin: 6px 0 10px; }
span.n { cursor: help; white-space: nowrap; } span.n:hover { background: #fff3c4; outline: 1px dotted #c9a400; }
figure.listing { margin: 10px 0 16px; max-width: 100%; }
figure.listing figcaption { display: flex; justify-content: space-between; align-items: baseline; gap: 8px;
                            color: var(--fg); font-size: 13.5px; margin: 0 0 2px; }
figure.listing pre { margin: 0; }
button.copy { display: none; font: 12px sans-serif; padding: 1px 8px; border: 1px solid var(--line); border-radius: 4px;
              background: #fff; color: var(--accent); cursor: pointer; }
.js button.copy { display: inline-block; }
.side { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(720px, 100%), 1fr)); gap: 0 16px; }
.side > * { min-width: 0; }
@media (max-width: 820px) { body { padding: 14px 12px 40px; } nav ol { columns: 1; } }
"""

# The copy buttons: hidden without JavaScript; copy the listing's text (clipboard API, or a
# hidden textarea and execCommand where the API is unavailable, as for some file:// pages).
_SCRIPT = """
document.documentElement.classList.add("js");
function sqdistCopyFallback(text) {
  var t = document.createElement("textarea"); t.value = text; t.style.position = "fixed"; t.style.opacity = "0";
  document.body.appendChild(t); t.select(); var ok = false;
  try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
  document.body.removeChild(t); return ok;
}
document.addEventListener("click", function (e) {
  var b = e.target.closest ? e.target.closest("button.copy") : null;
  if (!b) { return; }
  var text = b.closest("figure").querySelector("pre").innerText;
  function done(ok) { b.textContent = ok ? "copied" : "select the code and copy it";
                      setTimeout(function () { b.textContent = "copy"; }, 1500); }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(sqdistCopyFallback(text)); });
  } else { done(sqdistCopyFallback(text)); }
});
"""


def page_html(ctx: Context, sections: list[Section]) -> str:
    """``index.html``: header, contents, the sections, footer; inline CSS and script, nothing fetched."""
    nav = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.html}</section>' for s in sections)
    meta = ctx.results["meta"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sqdist report \u2014 {html.escape(meta['created'])}</title><style>{_CSS}{_pygments_css()}</style>"
        f"<script>{_SCRIPT}</script></head><body>"
        "<header><h1>sqdist report</h1>"
        f'<p class="meta">The exercise\'s three tasks, measured on this machine. sqdist {html.escape(meta["version"])}, '
        f'mode <b>{html.escape(meta["mode"])}</b>, device <b>{html.escape(meta["device"])}</b>, '
        f'created {html.escape(meta["created"])}, built in {ctx.num("meta.total_seconds", "time")}. '
        "Every number on this page is in <code>results.json</code>: hover a number to see its path there "
        "(its <code>data-key</code>).</p>"
        f"{_busy_warning(ctx)}<nav><b>Contents</b><ol>{nav}</ol></nav></header>{body}"
        "<footer>Generated by <code>sqdist report</code>. Figures: PNG files next to this page; "
        "data: <code>results.json</code>; text version: <code>report.md</code>.</footer></body></html>\n"
    )


def _busy(meta: dict) -> bool:
    loads = [v for v in (meta.get("load_average_start"), meta.get("load_average_end")) if v is not None]
    return bool(loads) and max(loads) > 1.25 * meta["cores"]


def _busy_warning(ctx: Context) -> str:
    if not _busy(ctx.results["meta"]):
        return ""
    return (
        '<p class="warn"><b>The machine was busy</b> while this report ran: 1-minute load average '
        f'{ctx.num("meta.load_average_start", "float")} at the start and {ctx.num("meta.load_average_end", "float")} '
        f'at the end, on {ctx.num("meta.cores", "int")} usable cores. Other programs competed for the CPU, so the '
        "timings are noisy (multi-threaded code suffers most); run the report again on an idle machine for "
        "representative times. Results and errors are unaffected.</p>"
    )


def page_md(ctx: Context, sections: list[Section]) -> str:
    """``report.md``: the same content as Markdown."""
    meta = ctx.results["meta"]
    parts = [
        "# sqdist report\n",
        f"sqdist {meta['version']}, mode **{meta['mode']}**, device **{meta['device']}**, created {meta['created']}, "
        f"built in {ctx.md('meta.total_seconds', 'time')}. All numbers are in `results.json`.\n",
    ]
    if _busy(meta):
        parts.append(
            f"> **The machine was busy** (load average {ctx.md('meta.load_average_start', 'float')} -> "
            f"{ctx.md('meta.load_average_end', 'float')} on {ctx.md('meta.cores', 'int')} cores): timings are noisy.\n"
        )
    for s in sections:
        parts.append(f"## {s.title}\n\n{s.md}")
    return "\n".join(parts)
