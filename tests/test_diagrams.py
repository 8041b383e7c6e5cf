"""The figures of the model: every box drawn with its equation, every arrow between real boxes."""

import matplotlib

matplotlib.use("Agg")

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from sat_core.diagrams import (  # noqa: E402
    ARCH_ARROWS,
    ARCH_BOXES,
    ARROWS,
    BOXES,
    STEPS,
    architecture_figure,
    decoder_step_figure,
)


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


def test_the_architecture_has_the_encoder_once_and_every_step_its_attention_lstm_and_output():
    texts = " ".join(text for _, text, _ in ARCH_BOXES.values())
    for ref in ("Sec. 3.1.1", "Sec. 3.1.2", "Eq. 4-6", "Eq. 1-3", "Eq. 7"):
        assert ref in texts, ref
    for symbol in (r"a_1,\dots,a_L", r"h_0, c_0", r"\frac{1}{L}\sum_i a_i"):
        assert symbol in texts, symbol
    assert [b for b in ARCH_BOXES if b in ("image", "cnn", "a", "init")] == ["image", "cnn", "a",
                                                                           "init"]
    for t, _, _ in STEPS:  # each step: alpha_t and z_t, h_t and c_t, p(y_t | a, y_<t)
        assert rf"\alpha_{{{t}}}" in ARCH_BOXES[f"att{t}"][1]
        assert rf"\hat z_{{{t}}}" in ARCH_BOXES[f"att{t}"][1]
        assert rf"h_{{{t}}}, c_{{{t}}}" in ARCH_BOXES[f"lstm{t}"][1]
        assert rf"p(y_{{{t}}} \mid a, y_{{<{t}}})" in ARCH_BOXES[f"out{t}"][1]
    assert [t for t, _, _ in STEPS] == ["1", "2", "C"] and STEPS[-1][2] == "<end>"


def test_the_architecture_figure_draws_every_box_and_the_flow_from_image_to_every_word():
    fig = architecture_figure()
    ax = fig.axes[0]
    boxes = {p.get_gid() for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert boxes == {f"box-{name}" for name in ARCH_BOXES}
    gids = [p.get_gid() for p in ax.patches if isinstance(p, FancyArrowPatch)]
    drawn = sorted(g for g in gids if g.startswith("arrow-"))
    assert drawn == sorted(f"arrow-{a}-{b}" for a, b, _ in ARCH_ARROWS)
    assert gids.count("word-out") == len(STEPS) and gids.count("word-in") == len(STEPS)
    assert all(a in ARCH_BOXES and b in ARCH_BOXES for a, b, _ in ARCH_ARROWS)
    edges = {(a, b) for a, b, _ in ARCH_ARROWS}
    for t, _, _ in STEPS:  # every step attends to the same a and emits its word from the LSTM
        assert {("a", f"att{t}"), (f"att{t}", f"lstm{t}"), (f"lstm{t}", f"out{t}")} <= edges
    # h_{t-1} reaches step t's attention and LSTM: h_0 from the initial state, h_1 from step 1
    assert {("init", "att1"), ("init", "lstm1"), ("lstm1", "att2"), ("lstm1", "lstm2")} <= edges
    reach, frontier = {"image"}, ["image"]
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            if a == node and b not in reach:
                reach.add(b)
                frontier.append(b)
    assert {f"out{t}" for t, _, _ in STEPS} <= reach
    fig.canvas.draw()  # mathtext of every label parses
