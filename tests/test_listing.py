"""Folded listings: the real source, a summary line from the docstring, closed by default."""

import inspect
import re

from sat_core.attention import SoftAttention
from sat_core.listing import listing
from sat_core.viz import upsample_attention


def test_listing_holds_the_real_source_folded_behind_what_it_computes():
    lst = listing(upsample_attention)
    assert lst.source == inspect.getsource(upsample_attention)
    assert lst.where == "sat_core/viz.py"
    assert lst.lines == len(inspect.getsource(upsample_attention).rstrip().splitlines())
    assert lst.summary.startswith("Spread the weights alpha_t")
    page = lst._repr_html_()
    assert re.search(r'<details class="sat-listing"><summary>Show the code: '
                     r"<code>upsample_attention</code> — Spread the weights", page)
    assert "<details class=\"sat-listing\" open>" not in page  # folded
    assert "def" in re.sub(r"<[^>]+>", "", page)  # the highlighted source is inside
    assert f"({lst.where}, {lst.lines} lines)" in page


def test_methods_and_classes_name_themselves_and_open_on_request():
    lst = listing(SoftAttention.forward, open=True)
    assert lst.name == "SoftAttention.forward"
    assert '<details class="sat-listing" open>' in lst._repr_html_()
    assert listing(SoftAttention).source.startswith("class SoftAttention")
    assert repr(lst).splitlines()[0] == lst.title()


def test_long_docstring_summaries_are_cut_at_a_word():
    def f():
        """A summary line that goes on and on and on and on and on and on and on and on and on and on
        and on and on and on for far too long to fit on one line."""

    s = listing(f).summary
    assert len(s) <= 110 and s.endswith(" ...") and "  " not in s
