//! The vmxnet3's registers and commands, as Linux's `vmxnet3_defs.h` and QEMU's
//! `hw/net/vmxnet3.h` define them. Every register is 32 bits wide and 8-byte aligned
//! (`VMXNET3_REG_ALIGN`); the device decodes 32-bit accesses only.
//!
//! BAR0 holds the "pass-through" registers, written on the data path (producer indices,
//! interrupt masks); BAR1 the "virtual device" registers, for configuration and commands.

/// Bytes BAR0 decodes (`VMXNET3_PT_REG_SIZE`).
pub const PT_SIZE: usize = 4096;
/// Bytes BAR1 decodes (`VMXNET3_VD_REG_SIZE`).
pub const VD_SIZE: usize = 4096;
/// Distance between two registers of an array (one per queue or interrupt).
pub const REG_ALIGN: usize = 8;

/// BAR0: interrupt mask register of interrupt 0; interrupt `i` at `IMR + 8 × i`. Writing 1
/// masks the interrupt, 0 unmasks it.
pub const IMR: usize = 0x000;
/// BAR0: transmit producer index of queue 0 (the next descriptor the driver will fill).
pub const TXPROD: usize = 0x600;
/// BAR0: receive producer index of queue 0, ring 0.
pub const RXPROD: usize = 0x800;
/// BAR0: receive producer index of queue 0, ring 1.
pub const RXPROD2: usize = 0xA00;

/// BAR1: revision report (read: a bit per revision the device supports) and selection
/// (write: the one bit the driver chose).
pub const VRRS: usize = 0x00;
/// BAR1: UPT version report and selection, as [`VRRS`].
pub const UVRS: usize = 0x08;
/// BAR1: DriverShared's device address, low 32 bits.
pub const DSAL: usize = 0x10;
/// BAR1: DriverShared's device address, high 32 bits.
pub const DSAH: usize = 0x18;
/// BAR1: command (write) and the last command's result (read).
pub const CMD: usize = 0x20;
/// BAR1: station address bytes 0–3 (byte 0 in bits 0–7).
pub const MACL: usize = 0x28;
/// BAR1: station address bytes 4–5.
pub const MACH: usize = 0x30;
/// BAR1: interrupt cause, for INTx; reading it acknowledges interrupt 0.
pub const ICR: usize = 0x38;
/// BAR1: event cause; writing ones acknowledges events.
pub const ECR: usize = 0x40;

/// Interrupt lines the device has at most (`VMXNET3_MAX_INTRS`: 8 TX + 16 RX queues and
/// the event interrupt). `reset` masks every one.
pub const MAX_INTRS: usize = 25;

/// Revision 1, the one this driver speaks: bit 0 of [`VRRS`] and [`UVRS`].
pub const REVISION_1: u32 = 1;

/// Commands, written to [`CMD`] (`VMXNET3_CMD_*`). "Set" commands start at 0xCAFE0000,
/// "get" commands at 0xF00D0000; a read of [`CMD`] returns the last command's result.
pub mod cmd {
    /// Read DriverShared at DSAL/DSAH and start the device; result 0 on success.
    pub const ACTIVATE_DEV: u32 = 0xCAFE_0000;
    /// Stop the device's queues (no more DMA); result 0.
    pub const QUIESCE_DEV: u32 = 0xCAFE_0001;
    /// Reset the device to its post-power-on state (inactive, interrupts masked,
    /// DriverShared forgotten); result 0.
    pub const RESET_DEV: u32 = 0xCAFE_0002;
    /// Re-read `rxFilterConf.rxMode`.
    pub const UPDATE_RX_MODE: u32 = 0xCAFE_0003;
    /// Re-read the multicast filter table.
    pub const UPDATE_MAC_FILTERS: u32 = 0xCAFE_0004;
    /// Re-read the VLAN filter table.
    pub const UPDATE_VLAN_FILTERS: u32 = 0xCAFE_0005;
    /// Result: link state in bit 0, speed in Mbit/s in bits 16–31.
    pub const GET_LINK: u32 = 0xF00D_0002;
    /// Result: permanent station address bytes 0–3.
    pub const GET_PERM_MAC_LO: u32 = 0xF00D_0003;
    /// Result: permanent station address bytes 4–5.
    pub const GET_PERM_MAC_HI: u32 = 0xF00D_0004;
}

/// [`cmd::GET_LINK`]'s result: link up.
pub const LINK_UP: u32 = 1;
