"""sat_core.tables: the chapters' Markdown result tables rendered as HTML (checked by hand)."""

from __future__ import annotations

import pytest

from sat_core.tables import ablation_table, markdown_to_html, show_table


def test_a_pipe_table_by_hand():
    text = "| model | BLEU-4 |\n| --- | ---: |\n| `soft` | 0.909 |\n| hard | **0.891** |"
    assert markdown_to_html(text) == (
        '<table class="table sat-table mathjax_process"><thead><tr><th>model</th>'
        '<th style="text-align: right">BLEU-4</th></tr></thead><tbody>'
        '<tr><td><code>soft</code></td><td style="text-align: right">0.909</td></tr>'
        '<tr><td>hard</td><td style="text-align: right"><strong>0.891</strong></td></tr>'
        "</tbody></table>")


def test_math_is_left_to_mathjax_and_html_is_escaped():
    out = markdown_to_html("| $\\alpha_t$ | a < b & `<pad>` |\n| --- | --- |\n| 1 | 2 |")
    assert "<th>\\(\\alpha_t\\)</th>" in out
    assert "a &lt; b &amp; <code>&lt;pad&gt;</code>" in out
    assert "$" not in out and "|" not in out


def test_a_paragraph_before_the_table():
    out = markdown_to_html("Estimates on **cpu**:\n\n| a | b |\n| --- | --- |\n| 1 | 2 |")
    assert out.startswith('<p class="mathjax_process">Estimates on <strong>cpu</strong>:</p>\n'
                          "<table")
    assert markdown_to_html("one line\nand another") == (
        '<p class="mathjax_process">one line and another</p>')


def test_malformed_tables_say_what_is_wrong():
    with pytest.raises(ValueError, match="--- row"):
        markdown_to_html("| a | b |\n| 1 | 2 |")
    with pytest.raises(ValueError, match="row 3 of the table has 3 cells, the header 2"):
        markdown_to_html("| a | b |\n| --- | --- |\n| 1 | 2 | 3 |")


def test_show_table_sends_html_first_and_the_markdown_beside_it(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw: shown.append((obj, raw)))
    show_table("| a |\n| --- |\n| 1 |")
    (bundle, raw), = shown
    assert raw is True and list(bundle) == ["text/html", "text/markdown"]
    assert bundle["text/html"].startswith("<table") and bundle["text/markdown"].startswith("| a |")


def test_ablation_table_by_hand():
    g = {"all": 0.9, "size": 0.8, "colour": 0.95, "shape": 0.85, "uniform": 0.13}
    figures = {"variants": {
        "soft: the recipe": {"overrides": {}, "caption_accuracy": 0.89, "grounding": g,
                             "bleu4": 0.909},
        "hard: caption reward": {"overrides": {"hard_reward": "caption", "hard_mix": 0.5},
                                 "caption_accuracy": 0.745, "grounding": g, "bleu4": 0.8333},
    }}
    assert ablation_table(figures, "hard").splitlines()[2] == (
        "| caption reward | `hard_reward = 'caption'`, `hard_mix = 0.5` | 0.745 | 0.900 | "
        "0.800 | 0.950 | 0.850 | 0.833 |")
    soft = ablation_table(figures, "soft").splitlines()
    assert len(soft) == 3 and soft[2].startswith("| the recipe | (the recipe) | 0.890 |")
    assert "<table" in markdown_to_html("\n".join(soft))  # a well-formed pipe table
    with pytest.raises(ValueError, match="no 'beam'"):
        ablation_table(figures, "beam")
