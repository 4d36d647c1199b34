"""The device layer: every board kind behind one `Device` interface (base.py), and what reaches a board.

Importing the package registers every kind, so `base.create(kind)` and a profile's `kind` field find them
whatever module was imported first. A new kind is one module here, decorated with `@register("name")`, plus its
import below.
"""

from edgeprune.devices import board, cuda, emulated, local  # noqa: F401 - each registers its kind
