"""labgrid resources for usb9pfs boards: the board on this host, and its network form.

`USB9PFSBoard` is a USB interface matched by udev like labgrid's other USB
resources: interface class ff/ff/09 (usb9pfs), narrowed by the port path of
its USB device and, for a gadget with several usb9pfs functions, by the
interface number.  `NetworkUSB9PFSBoard` is what the exporter publishes for it
(see export.py): host, port path, bus/device, interface, serial and the path of
the exporter's usb9pfsd control socket.

Must never: open the device or talk to usb9pfsd (the driver does that, through
the resource's command prefix), or match an interface that is not usb9pfs.
"""

import attr
from labgrid.factory import target_factory
from labgrid.resource.remote import RemoteUSBResource
from labgrid.resource.udev import USBResource

# bInterfaceClass / bInterfaceSubClass / bInterfaceProtocol of a usb9pfs
# function, as sysfs spells them.
USB9PFS_INTERFACE = ("ff", "ff", "09")

DEFAULT_SOCKET = "/run/usb9pfsd/control"


def _opt(kind):
    return attr.validators.optional(attr.validators.instance_of(kind))


@target_factory.reg_resource
@attr.s(eq=False)
class USB9PFSBoard(USBResource):
    """A usb9pfs board (one usb9pfs interface) plugged into this host.

    Args:
        port_path (str): the USB device's port path, e.g. "1-1.2" (sysfs name
            of the device, as `usb9pfsd list` shows it); None matches any port
        interface_number (int): bInterfaceNumber; None matches any usb9pfs
            interface of the device
        socket (str): usb9pfsd's control socket on this host
    """

    port_path = attr.ib(default=None, validator=_opt(str))
    interface_number = attr.ib(default=None, validator=_opt(int))
    socket = attr.ib(default=DEFAULT_SOCKET, validator=attr.validators.instance_of(str))

    def __attrs_post_init__(self):
        self.match["SUBSYSTEM"] = "usb"
        self.match["DEVTYPE"] = "usb_interface"
        super().__attrs_post_init__()

    def filter_match(self, device):
        triple = tuple(
            (device.attributes.asstring(a) if device.attributes.get(a) else "").lower()
            for a in ("bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol")
        )
        if triple != USB9PFS_INTERFACE:
            return False
        if self.port_path is not None:
            parent = device.find_parent("usb", "usb_device")
            if parent is None or parent.sys_name != self.port_path:
                return False
        if self.interface_number is not None:
            if _interface_number(device) != self.interface_number:
                return False
        return super().filter_match(device)

    @property
    def interface(self):
        """bInterfaceNumber of the matched interface (None while absent)."""
        if self.device is None:
            return None
        return _interface_number(self.device)

    @property
    def serial(self):
        """The USB device's serial number (None while absent or without one)."""
        device = self._get_usb_device()
        if device is None or not device.attributes.get("serial"):
            return None
        return device.attributes.asstring("serial")


def _interface_number(device):
    raw = device.attributes.get("bInterfaceNumber")
    if not raw:
        return None
    try:
        return int(device.attributes.asstring("bInterfaceNumber"), 16)
    except ValueError:
        return None


@target_factory.reg_resource
@attr.s(eq=False)
class NetworkUSB9PFSBoard(RemoteUSBResource):
    """A usb9pfs board on a labgrid exporter (published by USB9PFSBoardExport).

    Args (beyond labgrid's remote USB resources: host, busnum, devnum, path,
    vendor_id, model_id):
        interface (int): bInterfaceNumber of the usb9pfs interface
        serial (str): the USB device's serial number, if it has one
        socket (str): usb9pfsd's control socket on the exporter
    """

    interface = attr.ib(default=None, validator=_opt(int))
    serial = attr.ib(default=None, validator=_opt(str))
    socket = attr.ib(default=DEFAULT_SOCKET, validator=attr.validators.instance_of(str))

    def __attrs_post_init__(self):
        self.timeout = 10.0
        super().__attrs_post_init__()
