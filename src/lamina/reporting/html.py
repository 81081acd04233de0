"""One self-contained HTML report from a run folder: ``write_report(run_dir) -> run_dir/report.html``.

The report reads only files in the run folder (never the model or the data), so it can be
rebuilt at any time. Each section is a renderer ``(RunFolder) -> Section | None`` registered in
``SECTIONS`` (lamina's own are in ``sections.py``); it returns None when its files are absent, so a run without inspection gets a
shorter report, and a new feature adds a section without touching the others. Figures are
PNGs embedded as data URIs, the CSS is inline, and a Content-Security-Policy forbids any fetch:
the page works offline, from disk, on a laptop or a phone.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lamina.errors import LaminaError
from lamina.utils.io import atomic_write_bytes

REQUIRED = ("summary.json", "config.yaml")
_FIX = "re-run lamina inspect on the run folder to rewrite inspection/"


class RunFolder:
    """Cached, read-only access to a run folder's JSON/JSONL/YAML files.

    ``summary.json`` and ``config.yaml`` are required: a missing or corrupt one raises a one-line
    :class:`LaminaError` on construction. Every other file is optional: ``json``/``jsonl`` return
    None when it is absent and raise LaminaError when it is present but unreadable.

    Args:
        path: the run folder written by ``lamina train`` (its ``--out``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise LaminaError(f"run folder {self.path} does not exist", hint="pass the --out folder of `lamina train`")
        self._cache: dict[str, Any] = {}
        for name in REQUIRED:
            if not (self.path / name).is_file():
                raise LaminaError(f"run folder {self.path} has no {name}",
                                  hint="`lamina train` writes it when training ends; pass a finished run folder")
            if not isinstance(self._load(name), dict):
                raise LaminaError(f"{self.path / name} is not a mapping", hint="the file is damaged; train again")

    @property
    def summary(self) -> dict[str, Any]:
        return self._load("summary.json")

    @property
    def config(self) -> dict[str, Any]:
        return self._load("config.yaml")

    def has(self, rel: str) -> bool:
        return (self.path / rel).is_file()

    def json(self, rel: str) -> Any:
        """The parsed JSON file ``rel`` (relative to the run folder), or None if it is absent."""
        return self._load(rel) if self.has(rel) else None

    def jsonl(self, rel: str) -> list[dict[str, Any]] | None:
        """The records of a JSON-lines file, or None if it is absent."""
        return self._load(rel) if self.has(rel) else None

    def _load(self, rel: str) -> Any:
        if rel not in self._cache:
            path = self.path / rel
            try:
                text = path.read_text(encoding="utf-8")
                if rel.endswith((".yaml", ".yml")):
                    value = yaml.safe_load(text)
                elif rel.endswith(".jsonl"):
                    value = _parse_jsonl(text)
                else:
                    value = json.loads(text)
            except (OSError, ValueError, yaml.YAMLError) as e:
                fix = _FIX if rel.startswith("inspection/") else "the file is damaged; train again"
                raise LaminaError(f"{path} is unreadable or corrupt: {' '.join(str(e).split())[:200]}", hint=fix) from None
            self._cache[rel] = value
        return self._cache[rel]


def _parse_jsonl(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # a run killed mid-write leaves half a last line: keep the rest
                break
            raise ValueError(f"line {i + 1} is not JSON") from None
    return out


# -- building blocks; every text argument is escaped here, renderers pass plain text -------------

@dataclass(frozen=True)
class Section:
    """One report section: an anchor id, a heading, and its HTML body (built with the helpers)."""

    id: str
    title: str
    body: str


SectionRenderer = Callable[[RunFolder], Section | None]
SECTIONS: list[SectionRenderer] = []


def register_section(renderer: SectionRenderer) -> SectionRenderer:
    """Add a renderer at the end of the report (a decorator); sections render in this order."""
    SECTIONS.append(renderer)
    return renderer


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>" if text else ""


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def image(png: bytes, alt: str, caption: str = "", *, wide: bool = False) -> str:
    """A figure with an embedded PNG, never shown larger than its own pixels (no blur)."""
    width = struct.unpack(">I", png[16:20])[0] if png[:8] == b"\x89PNG\r\n\x1a\n" else 0
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    style = f' style="max-width:{width}px"' if width else ""
    cls = ' class="wide"' if wide else ""
    return f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{esc(alt)}"{style}>{cap}</figure>'


def figures_block(*items: str) -> str:
    return '<div class="figs">' + "".join(i for i in items if i) + "</div>"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, *, kv: bool = False) -> str:
    """A table whose numeric columns are right-aligned; ``kv``: a full-width key/value list."""
    num = [isinstance(c, int | float) for c in rows[0]] if rows else []

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="num"' if i < len(num) and num[i] else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    cls = ' class="kv"' if kv else ""
    return f'<div class="scroll"><table{cls}>{head}<tbody>{body}</tbody></table></div>'


def pct(x: Any, digits: int = 1) -> str:
    return f"{100.0 * float(x):.{digits}f}\u00a0%" if isinstance(x, int | float) else "—"  # no break before %


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def run_task(run: RunFolder) -> str:
    """The run's task (``classify``, ``language-model``): from summary.json, else model.json; classify by default."""
    model = run.json("model.json")
    for doc in (run.summary, model if isinstance(model, dict) else {}):
        if isinstance(doc.get("task"), str):
            return doc["task"]
    return "classify"


def run_modality(run: RunFolder) -> str:
    """The modality model.json records (image, signal, vector, text), '' when unknown."""
    model = run.json("model.json")
    return str(model.get("modality", "")) if isinstance(model, dict) else ""


def class_names(run: RunFolder) -> list[str] | None:
    for rel in ("inspection/confusion.json", "model.json"):
        doc = run.json(rel)
        if isinstance(doc, dict) and isinstance(doc.get("classes"), list):
            return [str(c) for c in doc["classes"]]
    return None


# -- the page -----------------------------------------------------------------------------------

CSS = """
:root{color-scheme:light;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box} figure{margin:0} figure.wide{grid-column:1/-1}
body{margin:0;background:#fff;color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:980px;margin:0 auto;padding:12px 16px 48px} h1{font-size:1.45rem;margin:.6rem 0 .1rem;line-height:1.25}
h2{font-size:1.2rem;margin:2rem 0 .75rem;padding-bottom:.3rem;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin:0 0 .75rem;font-size:.9rem;overflow-wrap:anywhere}
nav{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0 0}
nav a{color:var(--accent);text-decoration:none;font-size:.9rem;padding:.15rem .55rem;border:1px solid var(--line);border-radius:999px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(135px,1fr));gap:.6rem;margin-bottom:1rem}
.card{background:var(--card);border-radius:8px;padding:.6rem .8rem} .card b{font-size:1.3rem}
.card span{display:block;color:var(--muted);font-size:.8rem}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,400px),1fr));gap:1rem;align-items:start}
img{display:block;width:100%;height:auto;margin:0 auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.3rem} .scroll{overflow-x:auto;margin:.5rem 0}
table{border-collapse:collapse;min-width:min(100%,420px);font-size:.92rem} table.kv{width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600} .kv td:first-child{color:var(--muted);white-space:nowrap;width:1%}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:.5rem .75rem;border-radius:4px}
footer{margin-top:2.5rem;color:var(--muted);font-size:.85rem}
pre.text{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--card);border-radius:6px;padding:.5rem .75rem;
margin:.3rem 0 1rem;font:.9rem/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tokens{white-space:pre-wrap;overflow-wrap:anywhere;font:.9rem/1.9 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
margin:.2rem 0 .9rem} .tokens span{border-radius:3px}
"""

# No network at all: images only from data: URIs, only the inline style; nothing else may load.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render_report(run: RunFolder) -> str:
    """The report as an HTML string; a section whose optional files are malformed shows a note."""
    sections: list[Section] = []
    for renderer in SECTIONS:
        try:
            sec = renderer(run)
        except (LaminaError, KeyError, TypeError, ValueError, IndexError) as e:
            name = getattr(renderer, "__name__", "section").removeprefix("section_")
            reason = str(e) if isinstance(e, LaminaError) else f"{type(e).__name__}: {e}; a file from another version? {_FIX}"
            sec = Section(name.replace("_", "-"), name.replace("_", " ").capitalize(),
                          note(f"This section could not be drawn from the run folder: {reason}."))
        if sec is not None:
            sections.append(sec)
    s, cfg = run.summary, run.config
    dataset = s.get("dataset") or (cfg.get("data") or {}).get("name", "?")
    model = s.get("model") or (cfg.get("model") or {}).get("name", "?")
    title = f"lamina report: {dataset} · {model}"
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    return page(title, f"{run.path.resolve().name} · report written {when}", sections,
                f"Written by lamina {s.get('lamina', '?')} from the files of the run folder only; "
                "rebuild it with lamina report.")


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    """A self-contained HTML page: a header with a link to each section, the sections, a footer
    (plain text). The report and the curve page share it."""
    nav = "".join(f'<a href="#{esc(x.id)}">{esc(x.title)}</a>' for x in sections)
    body = "".join(f'<section id="{esc(x.id)}"><h2>{esc(x.title)}</h2>{x.body}</section>' for x in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav></header>{body}'
        f"<footer>{esc(footer)}</footer></main></body></html>\n"
    )


def write_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) and return its path.

    Args:
        run_dir: a finished run folder (it must hold summary.json and config.yaml).
        out: where to write the HTML instead of ``run_dir/report.html``.
    """
    run = RunFolder(run_dir)
    path = Path(out) if out is not None else run.path / "report.html"
    atomic_write_bytes(path, render_report(run).encode("utf-8"))
    return path
