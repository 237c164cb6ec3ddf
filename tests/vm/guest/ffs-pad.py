#!/usr/bin/env python3
"""FunctionFS "pad" function for the usb9pfsd VM rig.

    ffs-pad.py MOUNTPOINT COUNT READY_FILE

Writes descriptors for COUNT vendor interfaces (ff/00/00) without any
endpoint to MOUNTPOINT/ep0 of a mounted functionfs instance, writes
READY_FILE, then keeps ep0 open (reading its events) for the gadget's
lifetime. The composite scenario links it between two usb9pfs functions so
that the second one gets an interface number >= 10 (dummy_hcd has too few
distinct endpoint addresses for that many ACM/serial functions).
"""
import os
import struct
import sys

DESCRIPTORS_MAGIC_V2 = 3
STRINGS_MAGIC = 2
HAS_FS_DESC, HAS_HS_DESC = 1, 2

mnt, count, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# bLength, bDescriptorType=INTERFACE, bInterfaceNumber, bAlternateSetting,
# bNumEndpoints=0, class ff, subclass 0, protocol 0, iInterface 0
intfs = b"".join(struct.pack("<9B", 9, 4, i, 0, 0, 0xFF, 0, 0, 0) for i in range(count))
body = struct.pack("<II", count, count) + intfs + intfs  # full speed, high speed
descs = struct.pack("<III", DESCRIPTORS_MAGIC_V2, 12 + len(body), HAS_FS_DESC | HAS_HS_DESC) + body
strings = struct.pack("<IIII", STRINGS_MAGIC, 16, 0, 0)  # no strings

fd = os.open(os.path.join(mnt, "ep0"), os.O_RDWR)
os.write(fd, descs)
os.write(fd, strings)
with open(ready, "w") as f:
    f.write("ready\n")
while True:
    # struct usb_functionfs_event: 8-byte setup packet, type, 3 pad bytes.
    # No class requests are expected for these interfaces; events are only
    # drained so the queue never fills.
    if not os.read(fd, 12):
        break
