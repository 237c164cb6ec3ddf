//! Reading a USB device's raw descriptors: which of its interfaces, in which
//! alternate setting, is a usb9pfs transport (class ff, subclass ff, protocol
//! 09 with exactly one bulk IN and one bulk OUT endpoint), and which
//! interfaces are mass storage.
//!
//! Discovery (sysfs `descriptors`) and claiming (the usbfs node) read the same
//! bytes through this one parser, so they always agree on the interface by
//! *number* and see every alternate setting, not only the current one. It
//! must never do I/O, and never trust a length field: every descriptor is
//! bounds-checked and a malformed tail ends the walk.

/// One usb9pfs interface as the descriptors describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usb9pfsInterface {
    /// bInterfaceNumber.
    pub number: u8,
    /// bAlternateSetting that carries the two bulk endpoints.
    pub alt: u8,
    pub ep_in: u8,
    pub ep_out: u8,
    /// The smaller wMaxPacketSize of the two endpoints.
    pub max_packet: u16,
}

/// What one configuration offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Ordered by interface number; one entry per interface (the first
    /// alternate setting that qualifies).
    pub usb9pfs: Vec<Usb9pfsInterface>,
    /// Interface numbers of mass-storage interfaces (class 08).
    pub storage: Vec<u8>,
}

const DT_CONFIG: u8 = 2;
const DT_INTERFACE: u8 = 4;
const DT_ENDPOINT: u8 = 5;
const TRIPLE: (u8, u8, u8) = (0xff, 0xff, 0x09);

/// The alternate setting being walked and the bulk endpoints seen in it.
struct Walking {
    number: u8,
    alt: u8,
    ins: Vec<(u8, u16)>,
    outs: Vec<(u8, u16)>,
}

impl Walking {
    /// Records it if it has exactly one bulk IN and one bulk OUT endpoint
    /// (and no earlier alternate setting of the same interface did).
    fn finish(self, layout: &mut Layout) {
        if let ([(ep_in, mps_in)], [(ep_out, mps_out)]) = (self.ins.as_slice(), self.outs.as_slice()) {
            if !layout.usb9pfs.iter().any(|i| i.number == self.number) {
                layout.usb9pfs.push(Usb9pfsInterface {
                    number: self.number,
                    alt: self.alt,
                    ep_in: *ep_in,
                    ep_out: *ep_out,
                    max_packet: (*mps_in).min(*mps_out),
                });
            }
        }
    }
}

/// Parses the device descriptor followed by configuration descriptors (what
/// sysfs `descriptors` and a read of the usbfs node return) and describes the
/// configuration whose bConfigurationValue is `config`.
pub fn parse(raw: &[u8], config: u8) -> Layout {
    let mut layout = Layout::default();
    let mut in_config = false;
    // The usb9pfs-class alternate setting being walked, if any.
    let mut cur: Option<Walking> = None;
    let mut pos = 0;
    while pos + 2 <= raw.len() {
        let len = raw[pos] as usize;
        let kind = raw[pos + 1];
        if len < 2 || pos + len > raw.len() {
            break; // malformed: stop rather than guess
        }
        let d = &raw[pos..pos + len];
        match kind {
            DT_CONFIG if len >= 9 => {
                if let Some(w) = cur.take() {
                    w.finish(&mut layout);
                }
                in_config = d[5] == config;
            }
            DT_INTERFACE if len >= 9 && in_config => {
                if let Some(w) = cur.take() {
                    w.finish(&mut layout);
                }
                let (number, alt) = (d[2], d[3]);
                if d[5] == 0x08 && !layout.storage.contains(&number) {
                    layout.storage.push(number);
                }
                if (d[5], d[6], d[7]) == TRIPLE {
                    cur = Some(Walking { number, alt, ins: Vec::new(), outs: Vec::new() });
                }
            }
            DT_ENDPOINT if len >= 7 && in_config => {
                if let Some(w) = cur.as_mut() {
                    let (addr, attrs) = (d[2], d[3]);
                    let mps = u16::from_le_bytes([d[4], d[5]]) & 0x7ff;
                    if attrs & 0x03 == 0x02 {
                        if addr & 0x80 != 0 {
                            w.ins.push((addr, mps));
                        } else {
                            w.outs.push((addr, mps));
                        }
                    }
                }
            }
            _ => {}
        }
        pos += len;
    }
    if let Some(w) = cur.take() {
        w.finish(&mut layout);
    }
    layout.usb9pfs.sort_by_key(|i| i.number);
    layout.storage.sort_unstable();
    layout
}

/// Builds raw descriptors for tests (of this module, discovery and hotplug).
#[doc(hidden)]
pub mod build {
    /// An interface in one alternate setting: (number, alt, class triple,
    /// endpoints as (address, bulk?)).
    pub struct Alt {
        pub number: u8,
        pub alt: u8,
        pub triple: (u8, u8, u8),
        pub endpoints: Vec<(u8, bool)>,
    }

    impl Alt {
        pub fn usb9pfs(number: u8, alt: u8, ep: u8) -> Alt {
            Alt { number, alt, triple: (0xff, 0xff, 0x09), endpoints: vec![(0x80 | ep, true), (ep, true)] }
        }
        pub fn empty(number: u8, alt: u8, triple: (u8, u8, u8)) -> Alt {
            Alt { number, alt, triple, endpoints: Vec::new() }
        }
    }

    /// Device descriptor + one configuration (value `config`) with `alts`.
    pub fn device(config: u8, alts: &[Alt]) -> Vec<u8> {
        let mut raw = vec![18, 1, 0, 2, 0, 0, 0, 64, 0x6b, 0x1d, 0x09, 0x01, 0, 1, 1, 2, 3, 1];
        raw.extend(configuration(config, alts));
        raw
    }

    pub fn configuration(config: u8, alts: &[Alt]) -> Vec<u8> {
        let mut body = Vec::new();
        let interfaces = alts.iter().map(|a| a.number).collect::<std::collections::BTreeSet<_>>().len() as u8;
        for a in alts {
            body.extend([9, 4, a.number, a.alt, a.endpoints.len() as u8, a.triple.0, a.triple.1, a.triple.2, 0]);
            for (addr, bulk) in &a.endpoints {
                body.extend([7, 5, *addr, if *bulk { 2 } else { 3 }, 0x00, 0x02, 0]);
            }
        }
        let total = (9 + body.len()) as u16;
        let mut c = vec![9, 2, total as u8, (total >> 8) as u8, interfaces, config, 0, 0x80, 50];
        c.extend(body);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::build::{device, Alt};
    use super::*;

    #[test]
    fn finds_every_usb9pfs_interface_by_number_beside_other_functions() {
        let raw = device(
            1,
            &[
                Alt::empty(0, 0, (0x02, 0x02, 0x01)), // ACM control
                Alt::usb9pfs(2, 0, 2),
                Alt { number: 3, alt: 0, triple: (0x08, 0x06, 0x50), endpoints: vec![(0x83, true), (0x03, true)] },
                Alt::usb9pfs(10, 0, 4),
            ],
        );
        let l = parse(&raw, 1);
        let got: Vec<_> = l.usb9pfs.iter().map(|i| (i.number, i.alt, i.ep_in, i.ep_out, i.max_packet)).collect();
        assert_eq!(got, vec![(2, 0, 0x82, 0x02, 512), (10, 0, 0x84, 0x04, 512)]);
        assert_eq!(l.storage, vec![3]);
        assert_eq!(parse(&raw, 2), Layout::default(), "another configuration value");
    }

    #[test]
    fn the_alternate_setting_with_the_endpoints_is_chosen() {
        let raw = device(1, &[Alt::empty(0, 0, TRIPLE), Alt::usb9pfs(0, 1, 1)]);
        let l = parse(&raw, 1);
        assert_eq!(l.usb9pfs.len(), 1);
        assert_eq!((l.usb9pfs[0].number, l.usb9pfs[0].alt), (0, 1));
    }

    #[test]
    fn wrong_endpoints_or_class_do_not_qualify() {
        let interrupt = Alt { number: 0, alt: 0, triple: TRIPLE, endpoints: vec![(0x81, false), (0x01, true)] };
        let three = Alt { number: 1, alt: 0, triple: TRIPLE, endpoints: vec![(0x82, true), (0x02, true), (0x83, true)] };
        let vendor = Alt { number: 2, alt: 0, triple: (0xff, 0xff, 0x08), endpoints: vec![(0x84, true), (0x04, true)] };
        assert!(parse(&device(1, &[interrupt, three, vendor]), 1).usb9pfs.is_empty());
    }

    #[test]
    fn truncated_or_lying_lengths_never_panic() {
        let raw = device(1, &[Alt::usb9pfs(0, 0, 1)]);
        for cut in 0..raw.len() {
            let _ = parse(&raw[..cut], 1);
        }
        let mut bad = raw.clone();
        bad[18] = 0; // a zero-length descriptor would loop forever
        assert_eq!(parse(&bad, 1), Layout::default());
        let mut bad = raw;
        bad[18] = 255;
        assert_eq!(parse(&bad, 1), Layout::default());
    }
}
