"""``python -m fserasing``: the fill-mode contact sheet (see :mod:`fserasing.demo`)."""

from fserasing.demo import main

raise SystemExit(main())
