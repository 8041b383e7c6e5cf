"""The model at a glance: a drawn figure of one decoder step, with the paper's symbols.

:func:`decoder_step_figure` draws what flows where in one step t of Xu et al. (2015): the encoder's
annotation vectors a_i (Sec. 3.1.1), the attention scores and weights (Eq. 4-5), the gated context
z_hat_t (Eq. 13 and Sec. 4.2.1), the LSTM (Eq. 1-3) and the deep output (Eq. 7), and the two
loops to step t + 1 (the state h_t and the word y_t). It is drawn by code (matplotlib), so the
book commits no image and the figure follows the notation of the code.
"""

from __future__ import annotations

from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# (x, y, width, height) of each box in axes units (0..14 x 0..6.6), its text, and its colour.
BOXES: dict[str, tuple[tuple[float, float, float, float], str, str]] = {
    "image": ((0.2, 2.4, 1.3, 1.2), "image\n" r"$224\times224$", "#eeeeee"),
    "cnn": ((2.0, 2.4, 1.6, 1.2), "CNN encoder\n(ch. 3)", "#dbe9f6"),
    "a": ((4.1, 2.2, 1.9, 1.6), "annotation vectors\n" r"$a_1,\dots,a_L \in \mathbb{R}^D$",
          "#dbe9f6"),
    "att": ((4.1, 4.5, 1.9, 1.2), "scores (Eq. 4)\n" r"$e_{ti}=f_{att}(a_i,h_{t-1})$", "#fde2c8"),
    "alpha": ((6.5, 4.5, 1.9, 1.2), "weights (Eq. 5)\n" r"$\alpha_t=\mathrm{softmax}(e_t)$",
              "#fde2c8"),
    "z": ((6.5, 2.2, 1.9, 1.6), "context (Eq. 13)\n"
          r"$\hat z_t=\beta_t\sum_i\alpha_{ti}a_i$" "\n" r"gate $\beta_t$ (Sec. 4.2.1)", "#fde2c8"),
    "lstm": ((9.0, 2.2, 1.6, 1.6), "LSTM\n(Eq. 1-3)\n" r"$h_t, c_t$", "#d9f0d3"),
    "out": ((11.1, 2.2, 2.8, 1.6), "deep output (Eq. 7)\n"
            r"$p(y_t)\propto\exp(L_o(Ey_{t-1}$" "\n" r"$+\,L_hh_t+L_z\hat z_t))$", "#d9f0d3"),
    "y": ((9.0, 0.3, 1.6, 1.0), "previous word\n" r"$E\,y_{t-1}$", "#eeeeee"),
}

# (from, to, label, connection style): the data flow of step t.
ARROWS: tuple[tuple[str, str, str, str], ...] = (
    ("image", "cnn", "", "arc3"),
    ("cnn", "a", "", "arc3"),
    ("a", "att", "", "arc3"),
    ("att", "alpha", "", "arc3"),
    ("alpha", "z", "", "arc3"),
    ("a", "z", "", "arc3"),
    ("z", "lstm", "", "arc3"),
    ("y", "lstm", "", "arc3"),
    ("lstm", "out", "", "arc3"),
)


def _anchor(name: str, side: str) -> tuple[float, float]:
    (x, y, w, h), _, _ = BOXES[name]
    return {"left": (x, y + h / 2), "right": (x + w, y + h / 2), "top": (x + w / 2, y + h),
            "bottom": (x + w / 2, y)}[side]


def _sides(a: str, b: str) -> tuple[str, str]:
    """Which sides of boxes ``a`` and ``b`` an arrow between them joins (by their centres)."""
    (xa, ya, wa, ha), _, _ = BOXES[a]
    (xb, yb, wb, hb), _, _ = BOXES[b]
    dx, dy = (xb + wb / 2) - (xa + wa / 2), (yb + hb / 2) - (ya + ha / 2)
    if abs(dx) >= abs(dy):
        return ("right", "left") if dx > 0 else ("left", "right")
    return ("top", "bottom") if dy > 0 else ("bottom", "top")


def decoder_step_figure(figsize: tuple[float, float] = (14.0, 6.6)) -> Figure:
    """One step t of the decoder: boxes for each equation, arrows for what flows where, and the
    two loops that feed step t + 1 (dashed): h_t back into the scores, y_t back as E y."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.set_xlim(0, 14)
    ax.set_ylim(0, 6.6)
    ax.axis("off")
    for name, ((x, y, w, h), text, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour,
                                    ec="#555555", lw=1.0, gid=f"box-{name}"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)
    for a, b, label, style in ARROWS:
        sa, sb = _sides(a, b)
        ax.add_patch(FancyArrowPatch(_anchor(a, sa), _anchor(b, sb), arrowstyle="-|>",
                                     mutation_scale=12, lw=1.2, color="#333333",
                                     connectionstyle=style, gid=f"arrow-{a}-{b}"))
        if label:
            (x0, y0), (x1, y1) = _anchor(a, sa), _anchor(b, sb)
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.1, label, ha="center", fontsize=8)
    loops = (  # step t + 1: the new state goes back into the scores, the new word into E y
        (_anchor("lstm", "top"), _anchor("att", "top"),
         "arc,angleA=90,angleB=90,armA=157,armB=20,rad=8"),
        (_anchor("out", "bottom"), _anchor("y", "right"), "angle,angleA=-90,angleB=0,rad=8"),
    )
    for start, end, style in loops:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.1,
                                     ls="--", color="#1a5fb4", connectionstyle=style, gid="loop"))
    ax.text(7.45, 6.1, r"$h_t$: the state that step $t+1$ attends with (its $h_{t-1}$)",
            color="#1a5fb4", fontsize=8.5, ha="center")
    ax.text(12.35, 1.25, r"$y_t$, fed back as" "\n" r"step $t+1$'s $E\,y_{t-1}$", color="#1a5fb4",
            fontsize=8.5, ha="right")
    ax.set_title("One step t of the decoder (soft attention; hard attention samples one "
                 r"location $s_t\sim\alpha_t$ instead of the sum)", fontsize=10)
    return fig


__all__ = ["ARROWS", "BOXES", "decoder_step_figure"]
