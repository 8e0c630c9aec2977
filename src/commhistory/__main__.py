"""``python -m commhistory``: the same as the ``commhistory`` command."""

from __future__ import annotations

from commhistory.cli import main

raise SystemExit(main())
