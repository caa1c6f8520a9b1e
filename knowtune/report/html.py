"""A small self-contained HTML page builder: headings, paragraphs, tables and embedded plots.
The page opens in any browser with no server (plots are inline PNGs)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from knowtune.files import atomic_write_text

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.yes{color:#17702b;font-weight:600}
.no{color:#b3261e;font-weight:600}.na{color:#777}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}
"""


class Page:
    """Accumulates HTML fragments; `write` saves the page atomically."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading."""
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        """A paragraph of plain text."""
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list[object]], classes: list[list[str]] | None = None) -> None:
        """A table; `classes` optionally gives a CSS class per cell (e.g. 'yes' / 'no')."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cells = []
            for j, cell in enumerate(row):
                cls = classes[i][j] if classes and classes[i][j] else ""
                cells.append(f"<td class='{cls}'>{html.escape(str(cell))}</td>" if cls else f"<td>{html.escape(str(cell))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def figure(self, fig, caption: str = "") -> None:
        """Embed a matplotlib figure as an inline PNG."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode()
        self.parts.append(f"<figure><img src='data:image/png;base64,{data}'/><figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, path: str | Path) -> None:
        """Save the page."""
        doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
               f"<style>{_STYLE}</style></head><body>{''.join(self.parts)}</body></html>\n")
        atomic_write_text(path, doc)


def interval_figure(labels: list[str], estimates: list[float], cis: list[tuple[float, float]], thresholds: list[float],
                    xlabel: str):
    """A forest plot: each compared quantity's estimate with its interval as an error bar, and the
    threshold its verdict is judged against as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    ys = list(range(len(labels)))[::-1]
    lows = [e - lo for e, (lo, _) in zip(estimates, cis)]
    highs = [hi - e for e, (_, hi) in zip(estimates, cis)]
    ax.errorbar(estimates, ys, xerr=[lows, highs], fmt="o", capsize=4, color="#2166ac")
    ax.scatter(thresholds, ys, marker="|", s=300, color="#b2182b", label="threshold of the rule")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(ys, [label[:60] for label in labels], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, loc="best")
    return fig
