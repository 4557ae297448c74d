// The NIC configurations of the QEMU suite: one line each. This file is the whole list:
// the test kernels (`netdump-qemu-nics`) build their driver dispatch from it and the
// harness its QEMU command lines and scenario matrix, each with its own `nic_table!`
// macro (a kernel ignores the QEMU columns, the harness the driver column).
//
//   Variant = Port type (qemu-tests/nics/src/ports): "name", machine, "QEMU arguments";
//
// The QEMU arguments (split at spaces) add the NIC on netdev `n0`.
//
// A port's `probe` declines hardware that is not its configuration, so the order only
// matters for a device two ports could both drive. Adding a NIC: a driver crate, its
// `Port` in `ports/`, and one line here (docs/PORTING.md, section 4).
nic_table! {
    E1000 = ports::e1000::E1000Port: "e1000", q35, "-device e1000,netdev=n0,romfile=";
    E1000e = ports::e1000e::E1000ePort: "e1000e", q35, "-device e1000e,netdev=n0,romfile=";
    Vmxnet3 = ports::vmxnet3::Vmxnet3Port: "vmxnet3", q35, "-device vmxnet3,netdev=n0,romfile=";
    // A plain virtio-net-pci offers both interfaces and the driver takes the modern one,
    // so each virtio configuration turns the other interface off.
    VirtioLegacy = ports::virtio::VirtioPort<false>: "virtio-legacy", q35, "-device virtio-net-pci,netdev=n0,disable-modern=on,romfile=";
    VirtioModern = ports::virtio::VirtioPort<true>: "virtio-modern", q35, "-device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=";
    // virtio-mmio on a machine without PCI: QEMU's default legacy register layout
    // (version 1), and the virtio 1.x layout (version 2) that Firecracker uses.
    VirtioMmio = ports::virtio_mmio::VirtioMmioPort: "virtio-mmio", microvm, "-device virtio-net-device,netdev=n0";
    VirtioMmioModern = ports::virtio_mmio::VirtioMmioPort: "virtio-mmio-modern", microvm, "-global virtio-mmio.force-legacy=false -device virtio-net-device,netdev=n0";
}
