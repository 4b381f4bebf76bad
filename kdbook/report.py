"""Turning stored results into the numbers, tables and provenance lines the chapters show.

Numbers quoted in a chapter's prose go through :func:`glue` (myst-nb's glue when it is
installed, as on the book's build machines; a no-op elsewhere, e.g. in Colab), so the
text always shows the value computed from the stored results.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``mean(b) - mean(a)`` with its standard error, unpaired (Welch) and paired by position.

    Paired: runs at the same position share the seed (initial weights, batch order)."""
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    diffs = [y - x for x, y in zip(a, b)]
    paired_se = (statistics.stdev(diffs) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return {"gain": mb - ma, "se": se, "paired_se": paired_se, "n_a": len(a), "n_b": len(b)}


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def show_table(header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Displays a Markdown table in a notebook (plain text elsewhere)."""
    table = markdown_table(header, rows)
    try:
        from IPython.display import Markdown, display

        display(Markdown(table))
    except ImportError:
        print(table)


def glue(name: str, value, display: bool = False) -> None:
    """Stores ``value`` under ``name`` for the prose ({glue:}`name`), when myst-nb is present."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. in Colab: the prose is on the website, nothing to fill in
        return
    myst_glue(name, value, display=display)


def provenance_line(results: Sequence[dict]) -> str:
    """One line for a set of runs: profile(s), device(s), data, total training wall time."""
    prov = [r["provenance"] for r in results]
    profiles = sorted({p["profile"] for p in prov})
    devices = sorted({p["device"] for p in prov})
    data = sorted({p["data"] for p in prov})
    wall = sum(p["wall_s"] for p in prov)
    return (f"profile={'/'.join(profiles)} | device={'; '.join(devices)} | data={'; '.join(data)} | "
            f"{len(results)} runs, wall time {wall / 60:.1f} min in total")
