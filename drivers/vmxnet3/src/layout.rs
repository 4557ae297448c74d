//! The shared-memory structures' layouts, as byte offsets (Linux's `vmxnet3_defs.h`,
//! revision 1; QEMU reads the same offsets through `offsetof`). Every field is little
//! endian; the structures are padded to multiples of 8 bytes.
//!
//! ```text
//! DriverShared (720 B)                      queue descriptor table (512 B, 128-aligned)
//!   0 magic         0xBABEFEE1                0 TxQueueDesc (256 B): ctrl, conf, status, stats
//!   8 devRead.misc  (72 B)                  256 RxQueueDesc (256 B): ctrl, conf, status, stats
//!  80 devRead.intrConf (40 B)
//! 120 devRead.rxFilterConf (528 B)
//! 648 devRead.rss/pm/pluginConfDesc (48 B)
//! 696 ecr, reserved
//! ```

/// `VMXNET3_REV1_MAGIC`, DriverShared's first word.
pub const MAGIC: u32 = 0xBABE_FEE1;

/// Size of `Vmxnet3_DriverShared` (revision 1).
pub const SHARED_SIZE: usize = 720;

/// Offsets in `Vmxnet3_DriverShared`.
pub mod shared {
    /// u32: [`MAGIC`](super::MAGIC).
    pub const MAGIC: usize = 0;
    /// u32: `devRead.misc.driverInfo.version`.
    pub const DRIVER_VERSION: usize = 8;
    /// u32: `devRead.misc.driverInfo.gos` (bits 0–1 word size, 2–5 OS type).
    pub const GOS: usize = 12;
    /// u32: `devRead.misc.driverInfo.vmxnet3RevSpt`.
    pub const REV_SUPPORTED: usize = 16;
    /// u32: `devRead.misc.driverInfo.uptVerSpt`.
    pub const UPT_SUPPORTED: usize = 20;
    /// u64: `devRead.misc.uptFeatures`.
    pub const UPT_FEATURES: usize = 24;
    /// u64: `devRead.misc.ddPA` (driver data, opaque to the device).
    pub const DD_PA: usize = 32;
    /// u64: `devRead.misc.queueDescPA`.
    pub const QUEUE_DESC_PA: usize = 40;
    /// u32: `devRead.misc.ddLen`.
    pub const DD_LEN: usize = 48;
    /// u32: `devRead.misc.queueDescLen`.
    pub const QUEUE_DESC_LEN: usize = 52;
    /// u32: `devRead.misc.mtu`.
    pub const MTU: usize = 56;
    /// u16: `devRead.misc.maxNumRxSG`: buffers one received frame may span.
    pub const MAX_RX_SG: usize = 60;
    /// u8: `devRead.misc.numTxQueues`.
    pub const NUM_TX_QUEUES: usize = 62;
    /// u8: `devRead.misc.numRxQueues`.
    pub const NUM_RX_QUEUES: usize = 63;
    /// u8: `devRead.intrConf.autoMask`.
    pub const AUTO_MASK: usize = 80;
    /// u8: `devRead.intrConf.numIntrs`.
    pub const NUM_INTRS: usize = 81;
    /// u8: `devRead.intrConf.eventIntrIdx`.
    pub const EVENT_INTR_IDX: usize = 82;
    /// u8 × 25: `devRead.intrConf.modLevels`.
    pub const MOD_LEVELS: usize = 83;
    /// u32: `devRead.intrConf.intrCtrl`.
    pub const INTR_CTRL: usize = 108;
    /// u32: `devRead.rxFilterConf.rxMode`.
    pub const RX_MODE: usize = 120;
    /// u16: `devRead.rxFilterConf.mfTableLen`.
    pub const MF_TABLE_LEN: usize = 124;
    /// u64: `devRead.rxFilterConf.mfTablePA`.
    pub const MF_TABLE_PA: usize = 128;
    /// u32 × 128: `devRead.rxFilterConf.vfTable`, a bit per VLAN ID.
    pub const VF_TABLE: usize = 136;
    /// u32: `ecr`, the event cause bits the device sets.
    pub const ECR: usize = 696;
}

/// Size of the queue descriptor table: one `Vmxnet3_TxQueueDesc` and one
/// `Vmxnet3_RxQueueDesc`, 256 bytes each.
pub const QUEUE_DESC_SIZE: usize = 512;
/// Where the `Vmxnet3_RxQueueDesc` starts in the table.
pub const RX_QUEUE_DESC: usize = 256;
/// Required alignment of the table (`VMXNET3_QUEUE_DESC_ALIGN`).
pub const QUEUE_DESC_ALIGN: usize = 128;

/// Offsets in `Vmxnet3_TxQueueDesc`.
pub mod txq {
    /// u32: `ctrl.txNumDeferred`.
    pub const NUM_DEFERRED: usize = 0;
    /// u32: `ctrl.txThreshold` (set by the device).
    pub const THRESHOLD: usize = 4;
    /// u64: `conf.txRingBasePA`.
    pub const RING_PA: usize = 16;
    /// u64: `conf.dataRingBasePA`.
    pub const DATA_RING_PA: usize = 24;
    /// u64: `conf.compRingBasePA`.
    pub const COMP_RING_PA: usize = 32;
    /// u64: `conf.ddPA`.
    pub const DD_PA: usize = 40;
    /// u32: `conf.txRingSize`.
    pub const RING_SIZE: usize = 56;
    /// u32: `conf.dataRingSize`.
    pub const DATA_RING_SIZE: usize = 60;
    /// u32: `conf.compRingSize`.
    pub const COMP_RING_SIZE: usize = 64;
    /// u32: `conf.ddLen`.
    pub const DD_LEN: usize = 68;
    /// u8: `conf.intrIdx`.
    pub const INTR_IDX: usize = 72;
}

/// Offsets in `Vmxnet3_RxQueueDesc`.
pub mod rxq {
    /// u8: `ctrl.updateRxProd`: the device wants RXPROD written as buffers are re-armed.
    pub const UPDATE_RX_PROD: usize = 0;
    /// u64: `conf.rxRingBasePA[0]`.
    pub const RING0_PA: usize = 16;
    /// u64: `conf.rxRingBasePA[1]`.
    pub const RING1_PA: usize = 24;
    /// u64: `conf.compRingBasePA`.
    pub const COMP_RING_PA: usize = 32;
    /// u64: `conf.ddPA`.
    pub const DD_PA: usize = 40;
    /// u32: `conf.rxRingSize[0]`.
    pub const RING0_SIZE: usize = 56;
    /// u32: `conf.rxRingSize[1]`.
    pub const RING1_SIZE: usize = 60;
    /// u32: `conf.compRingSize`.
    pub const COMP_RING_SIZE: usize = 64;
    /// u32: `conf.ddLen`.
    pub const DD_LEN: usize = 68;
    /// u8: `conf.intrIdx`.
    pub const INTR_IDX: usize = 72;
}

/// Bytes per descriptor of every ring (`Vmxnet3_GenericDesc`), completion rings included.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Bytes per transmit data ring entry (`Vmxnet3_TxDataDesc`).
pub const TX_DATA_DESC_SIZE: usize = 128;
/// Required alignment of every ring's base (`VMXNET3_RING_BA_ALIGN`).
pub const RING_ALIGN: usize = 512;
/// Ring sizes are multiples of this (`VMXNET3_RING_SIZE_ALIGN`).
pub const RING_SIZE_ALIGN: usize = 32;

/// Transmit descriptor (`Vmxnet3_TxDesc`): address (u64 at 0), then dword 2 at 8 (length
/// in bits 0–13, 0 meaning 16 KiB; generation in bit 14; descriptor type 15; `ext1` 16;
/// `msscof` 18–31) and dword 3 at 12 (`hlen` 0–9, offload mode 10–11, EOP 12, completion
/// request 13, VLAN insertion 15, tag 16–31).
pub mod txd {
    /// Dword 2's offset.
    pub const DWORD2: usize = 8;
    /// Dword 3's offset.
    pub const DWORD3: usize = 12;
    /// Dword 2: generation bit.
    pub const GEN_SHIFT: u32 = 14;
    /// Dword 3: end of packet.
    pub const EOP: u32 = 1 << 12;
    /// Dword 3: write a completion descriptor for this packet.
    pub const CQ: u32 = 1 << 13;
}

/// Transmit completion descriptor (`Vmxnet3_TxCompDesc`): dword 0 has the EOP
/// descriptor's index in bits 0–11; dword 3 the type in bits 24–30 and the generation in
/// bit 31.
pub mod tcd {
    /// Dword 3's offset.
    pub const DWORD3: usize = 12;
    /// Dword 0: index of the packet's EOP transmit descriptor.
    pub const INDEX_MASK: u32 = 0xFFF;
    /// Dword 3: generation bit.
    pub const GEN_SHIFT: u32 = 31;
}

/// Receive descriptor (`Vmxnet3_RxDesc`): address (u64 at 0), then dword 2 at 8 (buffer
/// length in bits 0–13, buffer type 14, descriptor type 15, generation 31).
pub mod rxd {
    /// Dword 2's offset.
    pub const DWORD2: usize = 8;
    /// Dword 3's offset (`ext1`, reserved).
    pub const DWORD3: usize = 12;
    /// Dword 2: buffer type, 0 = head (`VMXNET3_RXD_BTYPE_HEAD`), 1 = body.
    pub const BTYPE_SHIFT: u32 = 14;
    /// Dword 2: generation bit.
    pub const GEN_SHIFT: u32 = 31;
    /// Longest buffer a descriptor describes (`VMXNET3_MAX_RX_BUF_SIZE`).
    pub const MAX_BUFFER: usize = (1 << 14) - 1;
}

/// Receive completion descriptor (`Vmxnet3_RxCompDesc`): dword 0 has the receive
/// descriptor's index (bits 0–11), EOP (14), SOP (15) and the ring ID (16–25: queue for
/// ring 0, queue + number of queues for ring 1); dword 2 the length (0–13) and the error
/// bit (14); dword 3 the type (24–30) and the generation (31).
pub mod rcd {
    /// Dword 2's offset.
    pub const DWORD2: usize = 8;
    /// Dword 3's offset.
    pub const DWORD3: usize = 12;
    /// Dword 0: receive descriptor index.
    pub const INDEX_MASK: u32 = 0xFFF;
    /// Dword 0: end of packet.
    pub const EOP: u32 = 1 << 14;
    /// Dword 0: start of packet.
    pub const SOP: u32 = 1 << 15;
    /// Dword 0: ring ID.
    pub const RQID_SHIFT: u32 = 16;
    /// Dword 0: ring ID mask (after the shift).
    pub const RQID_MASK: u32 = 0x3FF;
    /// Dword 2: data length.
    pub const LEN_MASK: u32 = 0x3FFF;
    /// Dword 2: the frame is bad (truncated, or an error the device saw).
    pub const ERR: u32 = 1 << 14;
    /// Dword 3: generation bit.
    pub const GEN_SHIFT: u32 = 31;
}

/// Values written into DriverShared.
pub mod value {
    /// `driverInfo.version`: 1.0.0.0, one byte per component as Linux encodes it.
    pub const DRIVER_VERSION: u32 = 0x0100_0000;
    /// `gos.gosBits`: 1 for 32-bit, 2 for 64-bit guests.
    pub const GOS_BITS: u32 = if usize::BITS == 64 { 2 } else { 1 };
    /// `gos.gosType`: Linux (1), what DPDK and Unikraft claim too. The device only tells
    /// Windows (2) apart: QEMU then never spreads a received frame over several buffers.
    pub const GOS_TYPE_LINUX: u32 = 1;
    /// `rxMode` bit: unicast to the station address.
    pub const RXM_UCAST: u32 = 0x01;
    /// `rxMode` bit: broadcast.
    pub const RXM_BCAST: u32 = 0x04;
    /// `rxMode` bit: every frame.
    pub const RXM_PROMISC: u32 = 0x10;
    /// `intrCtrl` bit: every interrupt disabled (`VMXNET3_IC_DISABLE_ALL`).
    pub const IC_DISABLE_ALL: u32 = 0x1;
    /// `modLevels` entry: fewest interrupts (`UPT1_IML_HIGHEST`).
    pub const IML_HIGHEST: u8 = 7;
}

/// Where each structure sits in the DMA region (offsets from its start, which must be
/// [`RING_ALIGN`]-aligned), for `tx` transmit and `rx` receive descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaLayout {
    /// DriverShared.
    pub shared: usize,
    /// The queue descriptor table.
    pub queue_desc: usize,
    /// Transmit ring.
    pub tx_ring: usize,
    /// Transmit completion ring.
    pub tx_comp: usize,
    /// Transmit data ring (configured, never used: every frame is in its own buffer).
    pub tx_data: usize,
    /// Receive ring 0 (head buffers).
    pub rx_ring0: usize,
    /// Receive ring 1 (body buffers: configured, never armed).
    pub rx_ring1: usize,
    /// Receive completion ring.
    pub rx_comp: usize,
    /// Transmit buffers.
    pub tx_buffers: usize,
    /// Receive buffers.
    pub rx_buffers: usize,
    /// Total bytes.
    pub size: usize,
}

/// Descriptors in receive ring 1: the smallest ring, never given a buffer.
pub const RX_RING1_SIZE: usize = RING_SIZE_ALIGN;
/// Bytes of each transmit buffer: a full frame (1514 bytes) rounded up to 128.
pub const TX_BUFFER_SIZE: usize = 1536;
/// Bytes of each receive buffer: a full frame with a VLAN tag (1518 bytes) rounded up to
/// 128 (Linux gives ring 0 buffers of MTU + 18 bytes).
pub const RX_BUFFER_SIZE: usize = 1536;
/// Alignment of the buffer arrays.
pub const BUFFER_ALIGN: usize = 128;

const fn align_up(offset: usize, align: usize) -> usize {
    offset.next_multiple_of(align)
}

impl DmaLayout {
    /// The layout `Vmxnet3::new` carves, in this order.
    pub const fn new(tx: usize, rx: usize) -> DmaLayout {
        let shared = 0;
        let queue_desc = align_up(shared + SHARED_SIZE, QUEUE_DESC_ALIGN);
        let tx_ring = align_up(queue_desc + QUEUE_DESC_SIZE, RING_ALIGN);
        let tx_comp = align_up(tx_ring + tx * DESCRIPTOR_SIZE, RING_ALIGN);
        let tx_data = align_up(tx_comp + tx * DESCRIPTOR_SIZE, RING_ALIGN);
        let rx_ring0 = align_up(tx_data + tx * TX_DATA_DESC_SIZE, RING_ALIGN);
        let rx_ring1 = align_up(rx_ring0 + rx * DESCRIPTOR_SIZE, RING_ALIGN);
        let rx_comp = align_up(rx_ring1 + RX_RING1_SIZE * DESCRIPTOR_SIZE, RING_ALIGN);
        let tx_buffers = align_up(rx_comp + (rx + RX_RING1_SIZE) * DESCRIPTOR_SIZE, BUFFER_ALIGN);
        let rx_buffers = align_up(tx_buffers + tx * TX_BUFFER_SIZE, BUFFER_ALIGN);
        let size = rx_buffers + rx * RX_BUFFER_SIZE;
        DmaLayout {
            shared,
            queue_desc,
            tx_ring,
            tx_comp,
            tx_data,
            rx_ring0,
            rx_ring1,
            rx_comp,
            tx_buffers,
            rx_buffers,
            size,
        }
    }
}
