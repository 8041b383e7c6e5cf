"""The model at a glance: drawn figures of the whole architecture and of one decoder step, with the
paper's symbols.

:func:`architecture_figure` draws the whole model of Xu et al. (2015): the image through the CNN
encoder once, its L annotation vectors a_i (Sec. 3.1.1), the initial state h_0, c_0 from their mean
(Sec. 3.1.2), and the decoder unrolled over the caption: at every step t attention over the same
a_i (Eq. 4-6), the LSTM (Eq. 1-3) and the deep output (Eq. 7) that emits the word y_t, which, with
h_t, feeds step t + 1. :func:`decoder_step_figure` zooms into one step t: the encoder's
annotation vectors a_i (Sec. 3.1.1), the attention scores and weights (Eq. 4-5), the gated context
z_hat_t (Eq. 13 and Sec. 4.2.1), the LSTM (Eq. 1-3) and the deep output (Eq. 7), and the two
loops to step t + 1 (the state h_t and the word y_t). It is drawn by code (matplotlib), so the
book commits no image and the figures follow the notation of the code.
"""

from __future__ import annotations

from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

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




# The whole architecture: the encoder once, then the decoder unrolled over the caption. Each step
# t has a column of three boxes (attention, LSTM, deep output) and the word it emits on top.
STEPS: tuple[tuple[str, float, str], ...] = (("1", 7.0, "a"), ("2", 10.0, "small"),
                                               ("C", 14.0, "<end>"))
_COL_W = 2.0
_BUS_Y = 0.55  # the line under the columns that carries a to every step's attention


def _arch_boxes() -> dict[str, tuple[tuple[float, float, float, float], str, str]]:
    boxes = {
        "image": ((0.1, 1.25, 1.3, 1.2), "image", "#eeeeee"),
        "cnn": ((1.8, 1.25, 1.6, 1.2), "CNN encoder\n(ch. 3)\nonce per image", "#dbe9f6"),
        "a": ((3.8, 0.75, 2.2, 2.2), "\n\n\nannotation vectors\n"
              r"$a_1,\dots,a_L \in \mathbb{R}^D$" "\n(Sec. 3.1.1)", "#dbe9f6"),
        "init": ((3.8, 3.45, 2.2, 1.3), "initial state\n"
                 r"$h_0, c_0 = f_{init}(\frac{1}{L}\sum_i a_i)$" "\n(Sec. 3.1.2)", "#d9f0d3"),
    }
    for t, x, _ in STEPS:
        boxes[f"att{t}"] = ((x, 1.3, _COL_W, 1.1), "attention (Eq. 4-6)\n"
                            rf"$\alpha_{{{t}}},\ \hat z_{{{t}}}$", "#fde2c8")
        boxes[f"lstm{t}"] = ((x, 3.55, _COL_W, 1.1), "LSTM (Eq. 1-3)\n" rf"$h_{{{t}}}, c_{{{t}}}$",
                             "#d9f0d3")
        boxes[f"out{t}"] = ((x, 5.6, _COL_W, 1.0), "deep output (Eq. 7)\n"
                            rf"$p(y_{{{t}}} \mid a, y_{{<{t}}})$", "#d9f0d3")
    return boxes


ARCH_BOXES = _arch_boxes()


def _arch_arrows() -> tuple[tuple[str, str, str], ...]:
    """(from, to, label): solid arrows of the data flow; the h_{t-1} and E y_{t-1} inputs of
    each step are drawn by :func:`architecture_figure` from these too."""
    arrows = [("image", "cnn", ""), ("cnn", "a", ""), ("a", "init", "")]
    for i, (t, _, _) in enumerate(STEPS):
        arrows += [("a", f"att{t}", ""), (f"att{t}", f"lstm{t}", rf"$\hat z_{{{t}}}$"),
                   (f"lstm{t}", f"out{t}", rf"$h_{{{t}}}$")]
        prev = "init" if i == 0 else f"lstm{STEPS[i - 1][0]}"
        if t != "C":  # the dots stand between step 2 and step C
            arrows += [(prev, f"lstm{t}", ""), (prev, f"att{t}", "")]
    return tuple(arrows)


ARCH_ARROWS = _arch_arrows()


def _box_anchor(boxes: dict, name: str, side: str) -> tuple[float, float]:
    (x, y, w, h), _, _ = boxes[name]
    return {"left": (x, y + h / 2), "right": (x + w, y + h / 2), "top": (x + w / 2, y + h),
            "bottom": (x + w / 2, y), "top-right": (x + w, y + h), "bottom-right": (x + w, y),
            "top-left": (x, y + h), "bottom-left": (x, y)}[side]


def _arch_route(a: str, b: str) -> tuple[tuple[float, float], tuple[float, float], str]:
    """Start, end and matplotlib connection style of the arrow from box ``a`` to box ``b``."""
    bx = ARCH_BOXES
    if a == "a" and b.startswith("att") and b != "att1":  # up from the bus under the columns
        (x, y, w, h), _, _ = bx[b]
        return (x + w / 2, _BUS_Y), (x + w / 2, y), "arc3"
    if b.startswith("att") and (a == "init" or a.startswith("lstm")):  # h_{t-1} into attention
        return _box_anchor(bx, a, "bottom-right"), _box_anchor(bx, b, "top-left"), "arc3"
    if a == "a" and b == "init":
        return _box_anchor(bx, a, "top"), _box_anchor(bx, b, "bottom"), "arc3"
    (xa, ya, wa, ha), _, _ = bx[a]
    (xb, yb, wb, hb), _, _ = bx[b]
    if abs((yb + hb / 2) - (ya + ha / 2)) < 0.3:
        return _box_anchor(bx, a, "right"), _box_anchor(bx, b, "left"), "arc3"
    return _box_anchor(bx, a, "top"), _box_anchor(bx, b, "bottom"), "arc3"


def _draw_arch_boxes(ax) -> None:
    """Every box of the architecture, and the grid of L regions inside the annotations' box."""
    for name, ((x, y, w, h), text, colour) in ARCH_BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour,
                                    ec="#555555", lw=1.0, gid=f"box-{name}"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)
    (x, y, w, h), _, _ = ARCH_BOXES["a"]
    for r in range(3):
        for c in range(4):
            ax.add_patch(Rectangle((x + 0.5 + c * 0.3, y + h - 0.55 - r * 0.22), 0.28, 0.2,
                                   fc="#9ec5e8", ec="white", lw=0.5))


def _draw_arch_arrows(ax) -> None:
    """The data flow (ARCH_ARROWS): a along the bus to every step, h_{t-1} dashed."""
    bus_x = [ARCH_BOXES[f"att{t}"][0][0] + _COL_W / 2 for t, _, _ in STEPS[1:]]
    xa, ya = _box_anchor(ARCH_BOXES, "a", "bottom")
    ax.plot([xa, xa, max(bus_x)], [ya, _BUS_Y, _BUS_Y], color="#333333", lw=1.2)
    ax.text(5.2, 0.3, r"the same $a_1,\dots,a_L$ at every step", fontsize=9)
    for a, b, label in ARCH_ARROWS:
        start, end, style = _arch_route(a, b)
        h_prev = b.startswith("att") and a != "a"
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                     ls="--" if h_prev else "-",
                                     color="#1a5fb4" if h_prev else "#333333",
                                     connectionstyle=style, gid=f"arrow-{a}-{b}"))
        if h_prev:  # the previous state, h_{t-1} of step t
            label = "$h_0$" if a == "init" else rf"$h_{{{a[4:]}}}$"
            ax.text((start[0] + end[0]) / 2 + 0.12, (start[1] + end[1]) / 2 + 0.05, label,
                    color="#1a5fb4", fontsize=9)
        elif label:
            ax.text(start[0] + 0.1, (start[1] + end[1]) / 2, label, fontsize=9, va="center")
    # step 2 -> ... -> step C: the state passes through the dots
    (x2, _, w2, _), _, _ = ARCH_BOXES["lstm2"]
    (xc, yc, _, hc), _, _ = ARCH_BOXES["lstmC"]
    mid = (x2 + w2 + xc) / 2
    ax.text(mid, yc + hc / 2, r"$\cdots$", fontsize=16, ha="center", va="center")
    for start, end in (((x2 + w2, yc + hc / 2), (mid - 0.4, yc + hc / 2)),
                       ((mid + 0.4, yc + hc / 2), (xc, yc + hc / 2))):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                     color="#333333", gid="dots"))
    ax.add_patch(FancyArrowPatch((mid + 0.3, yc), _box_anchor(ARCH_BOXES, "attC", "top-left"),
                                 arrowstyle="-|>", mutation_scale=12, lw=1.2, ls="--",
                                 color="#1a5fb4", gid="dots"))
    ax.text(mid + 0.75, 2.95, "$h_{C-1}$", color="#1a5fb4", fontsize=9)


def _draw_words(ax) -> None:
    """Each step's word on top, and the previous word E y_{t-1} that enters its LSTM."""
    inputs = ("$E\\,y_0$ = <start>", "$E\\,y_1$", "$E\\,y_{C-1}$")
    for i, (t, x, word) in enumerate(STEPS):
        ax.text(x + _COL_W / 2, 7.15, rf"$y_{{{t}}}$ = '{word}'", ha="center", fontsize=10,
                fontweight="bold")
        ax.add_patch(FancyArrowPatch((x + _COL_W / 2, 6.65), (x + _COL_W / 2, 7.05),
                                     arrowstyle="-|>", mutation_scale=10, lw=1.0,
                                     color="#333333", gid="word-out"))
        feed_x = x + 0.25  # E y_{t-1} enters the LSTM from above, left of its h_t arrow
        ax.add_patch(FancyArrowPatch((feed_x - 0.9, 5.2), (feed_x, 4.7), arrowstyle="-|>",
                                     mutation_scale=10, lw=1.0, ls=":", color="#7a4d00",
                                     gid="word-in"))
        ax.text(feed_x - 0.95, 5.25, inputs[i], fontsize=8.5,
                color="#7a4d00", ha="right" if i == 0 else "center")


def architecture_figure(figsize: tuple[float, float] = (15.0, 7.0)) -> Figure:
    """The whole model: the image through the CNN once, its annotation vectors a_1..a_L, the
    initial state from their mean, and the decoder unrolled over the caption (steps 1, 2, ..., C),
    each step attending to the same a_i with the previous state and reading the previous word."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.set_xlim(0, 16.2)
    ax.set_ylim(-0.2, 7.6)
    ax.axis("off")
    _draw_arch_boxes(ax)
    _draw_arch_arrows(ax)
    _draw_words(ax)
    ax.set_title("The whole model: the encoder runs once per image; the decoder, unrolled over "
                 "the caption's C words,\nattends to the same annotation vectors at every step "
                 r"(soft attention; hard attention samples one location $s_t\sim\alpha_t$)",
                 fontsize=10)
    return fig

__all__ = ["ARCH_ARROWS", "ARCH_BOXES", "ARROWS", "BOXES", "STEPS", "architecture_figure",
           "decoder_step_figure"]
