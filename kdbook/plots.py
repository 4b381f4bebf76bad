"""Figures the chapters share, and interactive figures that also work on the static site.

Two ways to let a reader vary a parameter:

- :func:`animation_html` turns a matplotlib ``FuncAnimation`` into self-contained
  HTML (frames embedded as PNG, player controls drawn with plain Unicode characters,
  no stylesheet from a CDN), which the static website shows as it is;
- :func:`slider` shows an ipywidgets slider, but only where a live frontend can draw
  it (Jupyter, Colab). Anywhere else (``jupyter execute``, nbval, the stored outputs
  the website shows) it prints one line saying to run the notebook instead, so that
  no widget view ends up in a stored notebook.

The rest are small drawing helpers: CIFAR-10 images, bar charts of soft targets,
and the line saying which run produced a figure.
"""

from __future__ import annotations

import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np


# -----------------------------------------------------------------------------
# Interactive figures.

SLIDER_NOTE = ("Run this notebook in Jupyter or Colab to get a slider here\n"
               "(a widget needs a running kernel; the website shows the animation).")


def live_frontend() -> bool:
    """Whether a frontend that can draw ipywidgets is attached to this kernel.

    ``KDBOOK_WIDGETS=1`` or ``0`` decides explicitly (the test configuration,
    ``conftest.py``, sets 0). Otherwise: never outside an IPython kernel; yes in Colab,
    in a kernel started by a Jupyter server (JupyterLab, Notebook 7: they set
    ``JPY_SESSION_NAME``) and in VS Code notebooks; no elsewhere, in particular in
    headless runs such as ``jupyter execute``, which would otherwise store a widget
    view that the static site cannot draw."""
    forced = os.environ.get("KDBOOK_WIDGETS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"KDBOOK_WIDGETS must be 0 or 1, got {forced!r}")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    if "google.colab" in sys.modules:
        return True
    return bool(os.environ.get("JPY_SESSION_NAME")) or "__vsc_ipynb_file__" in shell.user_ns


@dataclass(frozen=True)
class LogSlider:
    """A slider on a log scale from ``low`` to ``high`` (both > 0), for :func:`slider`;
    ``steps`` positions per factor of 10."""

    low: float
    high: float
    value: float
    steps: int = 20

    def __post_init__(self):
        if not 0 < self.low <= self.value <= self.high:
            raise ValueError(f"need 0 < low <= value <= high, got {self.low}, {self.value}, {self.high}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")

    def widget(self):
        import ipywidgets

        return ipywidgets.FloatLogSlider(value=self.value, base=10, min=math.log10(self.low),
                                         max=math.log10(self.high), step=1 / self.steps,
                                         continuous_update=False)


def slider(function: Callable, **controls) -> None:
    """``ipywidgets.interact(function, **controls)`` where a live frontend can draw it,
    else a printed note (:data:`SLIDER_NOTE`). ``controls`` are ipywidgets widgets,
    abbreviations as for ``interact``, or :class:`LogSlider` s."""
    if not live_frontend():
        print(SLIDER_NOTE)
        return
    import ipywidgets

    ipywidgets.interact(function, **{name: control.widget() if isinstance(control, LogSlider) else control
                                     for name, control in controls.items()})


# Font Awesome icons of matplotlib's HTML player, replaced by Unicode characters.
_ICONS = {
    "fa-minus": "\u2212", "fa-fast-backward": "\u25c0\u25c0", "fa-step-backward": "\u25c0|",
    "fa-play fa-flip-horizontal": "\u25c0", "fa-pause": "\u275a\u275a", "fa-play": "\u25b6",
    "fa-step-forward": "|\u25b6", "fa-fast-forward": "\u25b6\u25b6", "fa-plus": "+",
}
_ICON_TAG = re.compile(r'<i class="fa ([a-z -]+)"></i>')
_EXTERNAL = re.compile(r'<link[^>]*href="https?://[^"]*"[^>]*>\s*', re.DOTALL)


def offline_html(html: str) -> str:
    """Makes matplotlib's ``to_jshtml`` output self-contained: removes the stylesheet it
    loads from a CDN (Font Awesome) and draws the player's buttons with Unicode."""
    html = _EXTERNAL.sub("", html)

    def icon(match: re.Match) -> str:
        name = match.group(1).strip()
        if name not in _ICONS:
            raise ValueError(f"unknown player icon {name!r}")
        return f"<span>{_ICONS[name]}</span>"

    html = _ICON_TAG.sub(icon, html)
    if re.search(r'(src|href)="https?://', html):
        raise ValueError("the animation still refers to an external resource")
    return html


def animation_html(animation, fps: float = 8, default_mode: str = "once") -> str:
    """Self-contained HTML (frames as embedded PNG) of a matplotlib ``FuncAnimation``;
    closes its figure so that the notebook does not show a static copy as well."""
    html = animation.to_jshtml(fps=fps, default_mode=default_mode)
    plt.close(animation._fig)
    return offline_html(html)


# -----------------------------------------------------------------------------
# Drawing helpers.


def show_image(ax, image, title: str | None = None) -> None:
    """A CIFAR-10 image, uint8 tensor or array (3, H, W), without axes."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {array.shape}")
    ax.imshow(array.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def soft_target_bars(ax, probs_by_temperature: Mapping[float, Sequence[float]],
                     classes: Sequence[str], log: bool = True, legend: bool = True) -> None:
    """Grouped bars of soft targets: one colour per temperature, one group per class."""
    temperatures = list(probs_by_temperature)
    width = 0.8 / len(temperatures)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(temperatures)))
    for k, (T, colour) in enumerate(zip(temperatures, colours)):
        probs = np.asarray(probs_by_temperature[T], dtype=float)
        if probs.shape != (len(classes),):
            raise ValueError(f"probabilities at T={T} must have {len(classes)} entries, got {probs.shape}")
        offsets = np.arange(len(classes)) + (k - (len(temperatures) - 1) / 2) * width
        ax.bar(offsets, probs, width, color=colour, label=f"T = {T:g}")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("$p_i^T$")
    if legend:
        ax.legend(fontsize=7, ncol=2)


def provenance_title(fig, title: str, description: str, width: int = 110) -> None:
    """A figure title with a wrapped second part in small print (what produced it)."""
    wrapped = "\n".join(textwrap.wrap(description, width))
    fig.suptitle(f"{title}\n{wrapped}", fontsize=9)
