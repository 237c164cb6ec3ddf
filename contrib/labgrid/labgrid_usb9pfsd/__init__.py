"""labgrid support for usb9pfsd: usb9pfs boards as labgrid resources.

Importing this package registers the resources (USB9PFSBoard,
NetworkUSB9PFSBoard) and the driver (USB9PFSDriver) with labgrid's target
factory; name it under `imports:` in a labgrid environment config.  The
exporter side is `labgrid-usb9pfsd-exporter` (exporter.py), which is not
imported here: clients need none of it.

Must never: change labgrid's own classes.
"""

from .resource import NetworkUSB9PFSBoard, USB9PFSBoard
from .driver import USB9PFSDriver
from .usb9pfsd import Usb9pfsdError

__all__ = ["USB9PFSBoard", "NetworkUSB9PFSBoard", "USB9PFSDriver", "Usb9pfsdError"]
