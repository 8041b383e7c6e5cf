"""The static-page attention stepper: its frames light the attended cell, its HTML is whole."""

import base64
import io
import re

import numpy as np
import pytest
from matplotlib import pyplot as plt

from sat_core.stepper import attention_frames, attention_stepper

GRID = (4, 4)


def one_hot(cells: list[int], L: int = 16) -> np.ndarray:
    a = np.full((len(cells), L), 1e-6)
    for t, i in enumerate(cells):
        a[t, i] = 1.0
    return a / a.sum(1, keepdims=True)


def test_each_frame_is_brightest_on_its_words_cell():
    image = np.full((16, 16, 3), 0.8)
    cells = [0, 5, 15]  # (row, col) = (0, 0), (1, 1), (3, 3) of the 4 x 4 grid, 4 px each
    frames = attention_frames(image, one_hot(cells), GRID, scale=2)
    assert len(frames) == 3 and frames[0].shape == (32, 32, 3)
    for frame, i in zip(frames, cells, strict=True):
        r, c = divmod(i, 4)
        peak = np.unravel_index(frame[..., 0].argmax(), frame.shape[:2])
        assert (peak[0] // 8, peak[1] // 8) == (r, c)  # brightest where alpha peaks ...
        assert frame[peak][0] == pytest.approx(0.8, abs=1e-6)  # ... at the image's own value
        far = frame[(3 - r) * 8 + 4, (3 - c) * 8 + 4, 0]
        assert far == pytest.approx(0.8 * 0.35, abs=0.02)  # dimmed to 35 % elsewhere


def decode_png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return plt.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


def test_html_has_one_control_and_one_frame_per_word_and_escapes_words():
    image = np.random.default_rng(0).random((8, 8, 3))
    words = ["a", "<start>", "red", "circle"]
    step = attention_stepper(image, one_hot([0, 3, 12, 15]), words, GRID, betas=[0.5, 1, 0.25, 0.75])
    page = step._repr_html_()
    uid = re.search(r'class="sat-stepper" id="([^"]+)"', page)[1]
    assert len(re.findall(rf'<input type="radio" name="{uid}"', page)) == 4
    assert page.count(" checked") == 1 and f'id="{uid}-0" value="0" checked' in page
    assert re.findall(r"<label for=[^>]+>([^<]*)</label>", page) == ["a", "&lt;start&gt;", "red",
                                                                     "circle"]
    assert "<start>" not in page  # would be swallowed by the browser as a tag
    figures = re.findall(r'<figure class="sat-frame f(\d+)"><img src="([^"]+)"', page)
    assert [int(t) for t, _ in figures] == [0, 1, 2, 3]
    for _, uri in figures:
        assert decode_png(uri).shape[:2] == (32, 32)  # 4x the 8 px image
    assert "β = 0.25" in page and 'max="3"' in page
    for t in range(4):  # the CSS shows frame t exactly when radio t is checked
        assert f"#{uid}-{t}:checked ~ .sat-frames .f{t} {{display: block;}}" in page


def test_same_input_same_html_and_different_input_different_id():
    image = np.full((8, 8, 3), 0.5)
    a = attention_stepper(image, one_hot([1, 2]), ["a", "b"], GRID).html
    assert a == attention_stepper(image, one_hot([1, 2]), ["a", "b"], GRID).html
    b = attention_stepper(image, one_hot([2, 1]), ["a", "b"], GRID).html
    assert re.search(r'id="(sat-step-\w+)"', a)[1] != re.search(r'id="(sat-step-\w+)"', b)[1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(words=["a"]), "T = 1 words"),
    (dict(words=[]), "no words"),
    (dict(betas=[1.0]), "1 betas for 2 words"),
    (dict(grid=(3, 3)), "L=9"),
])
def test_mismatched_inputs_say_what_is_wrong(kwargs, message):
    args = dict(image=np.zeros((8, 8, 3)), alphas=one_hot([1, 2]), words=["a", "b"], grid=GRID)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        attention_stepper(**args)
