"""``sqlite_utils.Database`` without numpy and pandas.

``sqlite_utils`` imports numpy and pandas at import time when they are installed, only to convert their scalar types
into SQLite columns. The node never hands it such values, and numpy alone costs an idle node ~13 MB of RSS
(``bench/footprint.py``), so this module imports ``sqlite_utils`` with both hidden; the node's modules take
``Database`` from here. It runs at import time (main thread), before any thread could import numpy.
"""

from __future__ import annotations

import sys

_HIDDEN = [name for name in ("numpy", "pandas") if name not in sys.modules and "sqlite_utils" not in sys.modules]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]  # "import numpy" raises ImportError meanwhile
try:
    from sqlite_utils import Database
finally:
    for _name in _HIDDEN:
        if _name in sys.modules and sys.modules[_name] is None:
            del sys.modules[_name]

__all__ = ["Database"]
