"""Book and instructor tooling: nothing here is imported by the chapters or the model.

* :mod:`sat_core.book.build`: ``python -m sat_core.book build|build-student|browser-test|clean|
  set-repository`` executes the chapters and builds the site and its student edition;
* :mod:`sat_core.book.student`: ``python -m sat_core.book.student SRC DST``, the notebooks without
  solutions;
* :mod:`sat_core.book.grade`: ``python -m sat_core.book.grade SUBMISSIONS_DIR``, a class graded;
* :mod:`sat_core.book.nbgrader_export`: ``python -m sat_core.book.nbgrader_export``, an nbgrader
  course;
* :mod:`sat_core.book.repository`: the book's public repository, one setting and its copies.
"""
