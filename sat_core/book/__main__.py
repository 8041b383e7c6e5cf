"""``python -m sat_core.book``: the command line of :mod:`sat_core.book.build`."""

import sys

from sat_core.book.build import main

sys.exit(main())
