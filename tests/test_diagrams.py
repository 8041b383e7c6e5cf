"""The decoder-step figure: every box drawn with its equation, every arrow between real boxes."""

import matplotlib

matplotlib.use("Agg")

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from sat_core.diagrams import ARROWS, BOXES, decoder_step_figure  # noqa: E402


def test_each_equation_of_the_step_has_its_box():
    texts = " ".join(text for _, text, _ in BOXES.values())
    for eq in ("Eq. 4", "Eq. 5", "Eq. 13", "Sec. 4.2.1", "Eq. 1-3", "Eq. 7"):
        assert eq in texts, eq
    for symbol in (r"a_1,\dots,a_L", r"\alpha_t", r"\hat z_t", r"\beta_t", "h_{t-1}", "E\\,y_{t-1}"):
        assert symbol in texts, symbol


def test_the_figure_draws_every_box_arrow_and_both_loops():
    fig = decoder_step_figure()
    ax = fig.axes[0]
    boxes = {p.get_gid() for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert boxes == {f"box-{name}" for name in BOXES}
    arrows = [p.get_gid() for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert sorted(a for a in arrows if a != "loop") == sorted(f"arrow-{a}-{b}" for a, b, *_ in ARROWS)
    assert arrows.count("loop") == 2
    assert all(a in BOXES and b in BOXES for a, b, *_ in ARROWS)
    # the data flow reaches the output from the image
    reach, frontier = {"image"}, ["image"]
    while frontier:
        node = frontier.pop()
        for a, b, *_ in ARROWS:
            if a == node and b not in reach:
                reach.add(b)
                frontier.append(b)
    assert "out" in reach and "z" in reach
    fig.canvas.draw()  # mathtext of every label parses
