"""Running plans on Microsoft's TinyTroupe (an optional extra; see the README).

Importing this package does not import TinyTroupe: that happens, contained, when
an engine is set up (`loader.import_tinytroupe`).
"""

from tiny_dsl.runtime.engines.profile import COMPACT_MEMORY, MemoryWindow
from tiny_dsl.runtime.engines.tinytroupe.engine import TinyTroupeEngine
from tiny_dsl.runtime.engines.tinytroupe.loader import (
    INSTALL_HINT,
    TinyTroupeNotInstalled,
    import_tinytroupe,
    tinytroupe_installed,
)

__all__ = [
    "COMPACT_MEMORY",
    "INSTALL_HINT",
    "MemoryWindow",
    "TinyTroupeEngine",
    "TinyTroupeNotInstalled",
    "import_tinytroupe",
    "tinytroupe_installed",
]
