"""sat_core: the tested core of "Show, Attend and Tell — the executable book".

Each module holds one idea of Xu et al. (2015) and mirrors a chapter of the book;
see ARCHITECTURE.md for the map.
"""

__version__ = "0.1.0"
