//! virtio-net over virtio-mmio (QEMU `-M microvm -device virtio-net-device`): no PCI, one
//! register block per device.
//!
//! **Finding the device.** Linux's convention, which Firecracker follows, is a
//! `virtio_mmio.device=<size>@<base>:<irq>` word per device on the kernel command line;
//! every such word is tried, in order. QEMU's microvm is meant to append them
//! (`auto-kernel-cmdline=on`), but QEMU 7.2 does not do it for a PVH kernel (the kernel
//! gets exactly `-append`), so without such a word the port looks where microvm puts its
//! transports: [`MICROVM_SLOTS`] blocks of 512 bytes from [`MICROVM_BASE`] (QEMU's
//! `hw/i386/microvm.c`; a device lands in the highest free slot). A slot without the
//! virtio-mmio magic value ends that scan, so on another machine it reads one register.
//!
//! QEMU's `virtio-mmio` presents the legacy register layout (version 1) unless
//! `-global virtio-mmio.force-legacy=false` is given (version 2); the driver takes both.

use core::ptr::NonNull;

use netdump_core::nic::PolledNic;
use netdump_pci::{Command, MmioBlock, PciAddress, RegisterBlock};
use netdump_virtio_net::transport::{MmioDeviceSpec, MmioError, MmioTransport};
use netdump_virtio_net::{DeviceStatus, Interface, Transport, VirtioNet};

use crate::{Found, Note, Port, Probe, Registers, mapped, take_dma};

/// The virtio-mmio driver: 32 + 32 buffers, as on PCI.
pub type VirtioMmioNic = VirtioNet<MmioTransport<MmioBlock>>;

/// The virtio-mmio configuration, and the interrupt status `leave_dirty` left pending.
pub struct VirtioMmioPort(pub VirtioMmioNic, u32);

super::polled_nic_through_field!(VirtioMmioPort);

/// Where QEMU's microvm puts its virtio-mmio transports (`VIRTIO_MMIO_BASE`), how many
/// there are and how many bytes each decodes.
pub const MICROVM_BASE: u64 = 0xFEB0_0000;
pub const MICROVM_SLOTS: u64 = 24;
pub const MICROVM_SLOT_SIZE: u64 = 0x200;

/// Registers the takeover hooks touch (virtio 1.2, 4.2.2 and 4.2.4).
mod reg {
    pub const GUEST_PAGE_SIZE: usize = 0x028;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DEVICE_LOW: usize = 0x0A0;
}

/// Reads of InterruptStatus `leave_dirty` waits for QEMU (which sends frames from its main
/// loop) to complete a frame and raise the interrupt: each read is an exit to QEMU.
const INTERRUPT_WAIT_READS: u32 = 2_000_000;

/// The block at `base..base + size`, if the identity map covers it.
fn map(base: u64, size: u64) -> Result<MmioBlock, &'static str> {
    if !mapped(base, size) || !base.is_multiple_of(4) {
        return Err("virtio-mmio registers outside the identity map or misaligned");
    }
    let len = usize::try_from(size).map_err(|_| "virtio-mmio register block too large")?;
    let pointer = NonNull::new(base as *mut u8).ok_or("virtio-mmio registers at address 0")?;
    // SAFETY: the block is inside the runtime's identity map (checked above), 4-byte
    // aligned, and names a virtio-mmio transport (the command line or the microvm layout
    // says so; the transport checks its magic value before anything else); this port is
    // its only user. TCG ignores cacheability.
    Ok(unsafe { MmioBlock::new(pointer, len) })
}

/// Why a transport was refused, for the report.
fn refusal(e: MmioError) -> &'static str {
    match e {
        MmioError::TooShort => "virtio-mmio register block too short",
        MmioError::DeviceGone => "virtio-mmio device not responding",
        MmioError::BadMagic(_) => "no virtio-mmio magic value at virtio_mmio.device=",
        MmioError::UnsupportedVersion(_) => "virtio-mmio version neither 1 nor 2",
        MmioError::NoDevice => "empty virtio-mmio transport at virtio_mmio.device=",
        MmioError::NotNetwork(_) => "virtio-mmio device is not a network device",
    }
}

/// A transport and where its registers are (base, size).
type Located = (MmioTransport<MmioBlock>, u64, u64);

/// The first virtio-net transport: from the command line, else from microvm's slots.
fn find(probe: &Probe) -> Option<Result<Located, &'static str>> {
    let mut announced = false;
    for (_, value) in probe.cmdline.iter().filter(|(key, _)| *key == MmioDeviceSpec::CMDLINE_KEY) {
        announced = true;
        let Some(spec) = value.and_then(MmioDeviceSpec::parse) else {
            return Some(Err("virtio_mmio.device= is not <size>@<base>:<irq>"));
        };
        let block = match map(spec.base, spec.size) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        match MmioTransport::new(block) {
            Ok(t) => return Some(Ok((t, spec.base, spec.size))),
            // Another kind of virtio device (a disk, a console): keep looking.
            Err(MmioError::NotNetwork(_)) => continue,
            Err(e) => return Some(Err(refusal(e))),
        }
    }
    if announced {
        return None;
    }
    for slot in (0..MICROVM_SLOTS).rev() {
        let base = MICROVM_BASE + slot * MICROVM_SLOT_SIZE;
        let block = match map(base, MICROVM_SLOT_SIZE) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        match MmioTransport::new(block) {
            Ok(t) => return Some(Ok((t, base, MICROVM_SLOT_SIZE))),
            Err(MmioError::NoDevice | MmioError::NotNetwork(_)) => continue,
            // Not a microvm transport: not a microvm, or not this configuration.
            Err(_) => return None,
        }
    }
    None
}

impl Port for VirtioMmioPort {
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>> {
        let (mut transport, base, size) = match find(probe)? {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        let version = transport.version();
        let dma = match take_dma() {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let found = Found {
            address: PciAddress::new(0, 0, 0),
            vendor_id: 0,
            device_id: netdump_virtio_net::transport::NET_DEVICE_ID as u16,
            command: Command::empty(),
            registers: Registers::VirtioMmio { base, size, version },
        };
        Some(
            VirtioMmioNic::new(transport, dma)
                .map_err(|e| match e {
                    netdump_virtio_net::InitError::Dma(_) => "virtio-net DMA region rejected",
                    netdump_virtio_net::InitError::DeviceGone => "virtio-net not responding",
                    netdump_virtio_net::InitError::NoMacAddress => "virtio-net offers no MAC address",
                    netdump_virtio_net::InitError::NoVersion1 => "virtio-mmio version 2 without VERSION_1",
                    netdump_virtio_net::InitError::QueueAbsent { .. } => "virtio-net queue missing",
                    netdump_virtio_net::InitError::QueueSizeUnusable { .. } => "virtio-net queue size unusable",
                })
                .map(|nic| (VirtioMmioPort(nic, 0), found)),
        )
    }

    fn kind(&self) -> &'static str {
        match self.0.interface() {
            Interface::Legacy => "virtio-net mmio legacy",
            Interface::Modern => "virtio-net mmio",
        }
    }
    /// No PCI and so no bus-master bit: a virtio-mmio device does DMA whenever its queues
    /// are set up.
    fn bus_master_enabled(&mut self) -> bool {
        true
    }
    fn link_up(&mut self) -> bool {
        self.0.link_up()
    }
    fn tx_in_flight(&self) -> usize {
        self.0.tx_in_flight()
    }
    fn tx_capacity(&self) -> usize {
        self.0.tx_capacity()
    }
    fn rx_capacity(&self) -> usize {
        self.0.rx_capacity()
    }

    /// What an interrupt-driven OS driver leaves when it dies: DRIVER_OK with its queues
    /// live (the ring is full and an ARP reply unread when this runs), used-buffer
    /// interrupts asked for and one raised and never acknowledged, and the transmit queue
    /// being re-set-up with another size (and, on version 2, other ring addresses not yet
    /// made ready; on version 1, 64 KiB guest pages, as an arm64 kernel uses).
    fn leave_dirty(&mut self, _found: &Found) {
        let nic = &mut self.0;
        nic.request_interrupts();
        // One frame the device completes with an interrupt: a slot is freed first (the
        // ring is full). Broadcast, a local experimental EtherType: nobody answers it.
        nic.poll_transmit();
        let mac = nic.mac_address();
        let _ = nic.transmit(60, &mut |frame| {
            frame.fill(0);
            frame[..6].fill(0xFF);
            frame[6..12].copy_from_slice(&mac);
            frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
        });
        let transport = nic.transport();
        for _ in 0..INTERRUPT_WAIT_READS {
            self.1 = transport.interrupt_status();
            if self.1 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        let version = transport.version();
        let registers = transport.registers();
        registers.write_u32(reg::QUEUE_SEL, 1);
        registers.write_u32(reg::QUEUE_NUM, 64);
        if version == 1 {
            registers.write_u32(reg::GUEST_PAGE_SIZE, 0x1_0000);
        } else {
            // Latched only (QueueReady is not written again): device addresses beyond any
            // RAM the suite gives a guest, never used unless the reset fails to rewrite them.
            registers.write_u32(reg::QUEUE_DESC_LOW, 0xF000_0000);
            registers.write_u32(reg::QUEUE_DRIVER_LOW, 0xF000_1000);
            registers.write_u32(reg::QUEUE_DEVICE_LOW, 0xF000_2000);
        }
    }

    fn check_clean(&mut self, _found: &Found) -> Result<(), Note> {
        let nic = &mut self.0;
        let mut expected = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK;
        if nic.interface() == Interface::Modern {
            expected |= DeviceStatus::FEATURES_OK;
        }
        let suppressed = nic.interrupts_suppressed();
        let transport = nic.transport();
        let status = transport.status();
        let pending = transport.interrupt_status();
        let queues = [transport.queue_enabled(0), transport.queue_enabled(1)];
        if self.1 == 0 {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_str(&mut n, "leave_dirty: the device raised no interrupt to leave pending");
            return Err(n);
        }
        if status != expected || pending != 0 || !suppressed || queues != [true, true] {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_fmt(
                &mut n,
                format_args!(
                    "state left over: status {:#04x}, interrupt status {pending:#x}, NO_INTERRUPT {suppressed}, \
                     queues enabled {queues:?}",
                    status.bits()
                ),
            );
            return Err(n);
        }
        Ok(())
    }
}
