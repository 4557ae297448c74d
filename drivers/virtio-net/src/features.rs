//! Feature bits and what the driver negotiates (virtio 1.2, sections 2.2, 5.1.3 and 6).
//!
//! The driver accepts a feature only when it implements what the feature asks of it, and
//! it accepts every feature a device may *require* of a driver it can serve:
//!
//! | bit | feature | negotiated | why |
//! |---|---|---|---|
//! | 5 | `MAC` | required | the station address comes from the device's configuration; without it the driver would have to invent one and program it through the control queue it does not use |
//! | 16 | `STATUS` | if offered | link state in the configuration: `transmit` reports `LinkDown` instead of sending into a dead link |
//! | 3 | `MTU` | if 68 ≤ mtu ≤ 1500 | a smaller path MTU (cloud overlays) is honoured; a larger one is left unnegotiated, so the device keeps to 1500 and 2 KiB receive buffers always suffice |
//! | 32 | `VERSION_1` | modern: required | the modern interface is virtio 1.x; a device that offers it fails FEATURES_OK without it |
//! | 33 | `ACCESS_PLATFORM` | if offered | the driver gives the device the addresses the integrator's `DmaRegion` says the device sees, which is what this feature means; QEMU refuses FEATURES_OK when it is offered and not accepted |
//! | 36 | `ORDER_PLATFORM` | if offered | the driver orders its ring accesses with full hardware fences (`mfence` on x86), which is what this feature asks for |
//!
//! Everything else is left off on purpose: no checksum or segmentation offloads (the
//! client builds complete frames and expects complete ones), no mergeable receive buffers
//! (one 2 KiB buffer holds any 1500-byte-MTU frame), no control queue (QEMU's device
//! starts promiscuous, and netdump filters frames itself), no multiqueue, no
//! `RING_EVENT_IDX` (interrupts are suppressed with the avail ring's `NO_INTERRUPT` flag,
//! which the device honours only without it) and no `ANY_LAYOUT` (the header always has a
//! descriptor of its own, which every device accepts).

use bitflags::bitflags;

bitflags! {
    /// Device and driver feature bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Features: u64 {
        /// Device handles packets with partial checksum (not negotiated).
        const CSUM = 1 << 0;
        /// Driver handles packets with partial checksum (not negotiated).
        const GUEST_CSUM = 1 << 1;
        /// The device reports its maximum MTU in the configuration.
        const MTU = 1 << 3;
        /// The device has a station address in the configuration.
        const MAC = 1 << 5;
        /// Driver can merge receive buffers (not negotiated).
        const MRG_RXBUF = 1 << 15;
        /// The configuration's `status` field reports the link state.
        const STATUS = 1 << 16;
        /// The device has a control virtqueue (not negotiated).
        const CTRL_VQ = 1 << 17;
        /// Several receive/transmit queue pairs (not negotiated).
        const MQ = 1 << 22;
        /// Legacy: the device accepts the header and the frame in any descriptor layout
        /// (not needed: the header gets a descriptor of its own).
        const ANY_LAYOUT = 1 << 27;
        /// `used_event`/`avail_event` instead of the flags (not negotiated).
        const RING_EVENT_IDX = 1 << 29;
        /// Legacy: the driver must never accept this bit (virtio 0.9.5's "bad feature").
        const BAD_FEATURE = 1 << 30;
        /// virtio 1.x semantics (the modern interface).
        const VERSION_1 = 1 << 32;
        /// The device reaches memory through the platform's address translation.
        const ACCESS_PLATFORM = 1 << 33;
        /// Packed virtqueues (not negotiated: the driver uses split queues).
        const RING_PACKED = 1 << 34;
        /// Buffers are used in the order they were made available (not negotiated).
        const IN_ORDER = 1 << 35;
        /// Memory accesses must be ordered as the platform orders them for real devices.
        const ORDER_PLATFORM = 1 << 36;
    }
}

/// The Ethernet payload size of standard frames: the largest MTU the driver's receive
/// buffers and the core's packets are sized for.
pub const STANDARD_MTU: u16 = 1500;
/// The smallest MTU a device may report (virtio 1.2, 5.1.4.1: the device MUST supply at
/// least 68).
pub const MIN_MTU: u16 = 68;

/// Which virtio interface a transport speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// Virtio 0.9.5 (the PCI I/O BAR, or virtio-mmio version 1): no `VERSION_1`, no
    /// FEATURES_OK, guest-endian.
    Legacy,
    /// Virtio 1.x (the PCI vendor capabilities and memory BARs, or virtio-mmio version 2).
    Modern,
}

/// Why feature negotiation could not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegotiationError {
    /// The device does not offer `MAC`.
    NoMacAddress,
    /// A modern interface whose device does not offer `VERSION_1`.
    NoVersion1,
}

/// The outcome of negotiation: the features to write and what follows from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The features the driver accepts: a subset of the device's offer.
    pub features: Features,
    /// The MTU the driver reports and keeps to.
    pub mtu: u16,
    /// Bytes of `virtio_net_hdr` before every frame: 12 with `VERSION_1` (the header
    /// always has `num_buffers`), 10 on a legacy device without mergeable buffers.
    pub header_len: usize,
}

/// Chooses the features to accept from those `offered`, for a device on `interface` that
/// reports `device_mtu` in its configuration (read only when `MTU` is offered).
pub fn negotiate(
    offered: Features,
    interface: Interface,
    device_mtu: Option<u16>,
) -> Result<Negotiated, NegotiationError> {
    if !offered.contains(Features::MAC) {
        return Err(NegotiationError::NoMacAddress);
    }
    if interface == Interface::Modern && !offered.contains(Features::VERSION_1) {
        return Err(NegotiationError::NoVersion1);
    }
    let mut wanted = Features::MAC | Features::STATUS;
    if interface == Interface::Modern {
        wanted |= Features::VERSION_1 | Features::ACCESS_PLATFORM | Features::ORDER_PLATFORM;
    }
    let usable_mtu = device_mtu.filter(|mtu| (MIN_MTU..=STANDARD_MTU).contains(mtu));
    if usable_mtu.is_some() {
        wanted |= Features::MTU;
    }
    let features = offered & wanted;
    let mtu = match usable_mtu {
        Some(mtu) if features.contains(Features::MTU) => mtu,
        _ => STANDARD_MTU,
    };
    let header_len = if features.contains(Features::VERSION_1) { 12 } else { 10 };
    Ok(Negotiated { features, mtu, header_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What QEMU 7.2's virtio-net offers with `-netdev user` (no vnet header: no
    /// offloads), in its modern form.
    const QEMU_MODERN: Features = Features::MAC
        .union(Features::STATUS)
        .union(Features::MRG_RXBUF)
        .union(Features::CTRL_VQ)
        .union(Features::MQ)
        .union(Features::ANY_LAYOUT)
        .union(Features::RING_EVENT_IDX)
        .union(Features::VERSION_1);

    #[test]
    fn modern_accepts_mac_status_and_version_1_only() {
        let n = negotiate(QEMU_MODERN, Interface::Modern, None).unwrap();
        assert_eq!(n.features, Features::MAC | Features::STATUS | Features::VERSION_1);
        assert_eq!((n.mtu, n.header_len), (1500, 12));
    }

    #[test]
    fn legacy_sees_32_bits_and_uses_the_short_header() {
        let offered = Features::from_bits_retain(QEMU_MODERN.bits() & 0xFFFF_FFFF);
        let n = negotiate(offered, Interface::Legacy, None).unwrap();
        assert_eq!(n.features, Features::MAC | Features::STATUS);
        assert_eq!(n.header_len, 10);
    }

    #[test]
    fn legacy_never_accepts_high_bits_even_if_reported() {
        let n = negotiate(QEMU_MODERN | Features::ACCESS_PLATFORM, Interface::Legacy, None).unwrap();
        assert!(!n.features.intersects(Features::VERSION_1 | Features::ACCESS_PLATFORM));
    }

    #[test]
    fn accepts_what_a_device_may_require() {
        let offered = QEMU_MODERN | Features::ACCESS_PLATFORM | Features::ORDER_PLATFORM;
        let n = negotiate(offered, Interface::Modern, None).unwrap();
        assert!(n.features.contains(Features::VERSION_1 | Features::ACCESS_PLATFORM | Features::ORDER_PLATFORM));
    }

    #[test]
    fn never_accepts_offloads_queues_or_the_bad_feature() {
        let n = negotiate(Features::all(), Interface::Modern, Some(1500)).unwrap();
        assert!(!n.features.intersects(
            Features::CSUM
                | Features::GUEST_CSUM
                | Features::MRG_RXBUF
                | Features::CTRL_VQ
                | Features::MQ
                | Features::ANY_LAYOUT
                | Features::RING_EVENT_IDX
                | Features::BAD_FEATURE
                | Features::RING_PACKED
        ));
    }

    #[test]
    fn honours_a_smaller_device_mtu() {
        let n = negotiate(QEMU_MODERN | Features::MTU, Interface::Modern, Some(1400)).unwrap();
        assert!(n.features.contains(Features::MTU));
        assert_eq!(n.mtu, 1400);
    }

    #[test]
    fn leaves_a_jumbo_or_invalid_mtu_unnegotiated() {
        for mtu in [9000, 1501, 67, 0] {
            let n = negotiate(QEMU_MODERN | Features::MTU, Interface::Modern, Some(mtu)).unwrap();
            assert!(!n.features.contains(Features::MTU), "mtu {mtu}");
            assert_eq!(n.mtu, 1500);
        }
    }

    #[test]
    fn requires_a_mac_address() {
        assert_eq!(
            negotiate(Features::VERSION_1 | Features::STATUS, Interface::Modern, None),
            Err(NegotiationError::NoMacAddress)
        );
    }

    #[test]
    fn modern_requires_version_1() {
        assert_eq!(negotiate(Features::MAC, Interface::Modern, None), Err(NegotiationError::NoVersion1));
    }
}
