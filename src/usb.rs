//! The board's side of the cable: finding usb9pfs interfaces (sysfs, udev
//! hotplug, raw descriptors) and moving bulk transfers on a claimed one
//! (usbfs URBs, libusb for the rest; or the in-memory gadget tests use).
//! Nothing here knows 9P beyond a frame's size field, or which server a
//! board maps to.

pub mod descriptors;
pub mod device;
pub mod discover;
pub mod hotplug;
pub mod pipe;
pub mod sim;
