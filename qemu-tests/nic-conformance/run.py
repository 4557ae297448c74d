#!/usr/bin/env python3
"""Runs the NIC conformance kernel in QEMU and checks, from the host, that its UDP frames
arrived.

    python3 qemu-tests/nic-conformance/run.py [--kernel ELF] [--frames N] [--device e1000]

Without --kernel it builds the kernel (release) with cargo and uses
$CARGO_TARGET_DIR (default: target/) /release/netdump-nic-conformance. It listens on a free
UDP port of 127.0.0.1, which QEMU's user network reaches as 10.0.2.2, runs QEMU with
`-append "port=<port> frames=<n>"`, and passes when QEMU exits with 33 (every check in the
kernel passed) and every tagged datagram of the flood and post-takeover phases arrived.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUCCESS_STATUS = 33  # isa-debug-exit: (0x10 << 1) | 1
# Phases whose frame count the kernel announces in the payload (see src/main.rs).
COUNTED_PHASES = {1: "flood", 2: "after takeover", 3: "between resets", 4: "largest frame"}


class Listener(threading.Thread):
    """Collects the sequence numbers of the tagged datagrams, per phase."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen = {}
        self.totals = {}
        self.datagrams = 0
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            self.datagrams += 1
            if len(data) >= 16 and data[:4] == b"NDNC":
                phase = data[4]
                seq, total = struct.unpack(">II", data[8:16])
                self.seen.setdefault(phase, set()).add(seq)
                self.totals[phase] = total

    def stop(self):
        time.sleep(0.5)  # let the last datagrams through the host stack
        self.stopping = True
        self.join()


def build_kernel():
    subprocess.run(["cargo", "build", "--release", "-p", "netdump-nic-conformance"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "netdump-nic-conformance")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", help="conformance kernel ELF (default: build it)")
    parser.add_argument("--frames", type=int, default=5000, help="frames in the flood phase")
    parser.add_argument("--device", default="e1000", help="QEMU NIC model (e1000, e1000-82545em, e1000-82544gc)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds before QEMU is killed")
    args = parser.parse_args()

    kernel = args.kernel or build_kernel()
    listener = Listener()
    listener.start()
    command = [
        "qemu-system-x86_64", "-machine", "q35", "-nodefaults", "-nographic", "-no-reboot", "-m", "64M",
        "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", "user,id=n0", "-device", f"{args.device},netdev=n0",
        "-kernel", kernel, "-append", f"port={listener.port} frames={args.frames}",
    ]
    try:
        qemu = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=args.timeout)
        output, status = qemu.stdout.decode(errors="replace"), qemu.returncode
    except subprocess.TimeoutExpired as e:
        output, status = (e.stdout or b"").decode(errors="replace"), None
    listener.stop()

    for line in output.splitlines():
        if line.startswith(("CHECK", "RESULT", "clock", "netdump")) or "panicked" in line:
            print(line)

    failures = []
    if status != SUCCESS_STATUS:
        failures.append(f"QEMU exit status {status}, expected {SUCCESS_STATUS}")
    for phase, name in COUNTED_PHASES.items():
        total = listener.totals.get(phase)
        got = listener.seen.get(phase, set())
        if total is None:
            failures.append(f"host: no datagram of phase {phase} ({name})")
            continue
        missing = sorted(set(range(total)) - got)
        print(f"host: phase {phase} ({name}): {len(got)} of {total} datagrams")
        if missing:
            failures.append(f"host: phase {phase} ({name}) missing {len(missing)}, first {missing[:10]}")
    print(f"host: {listener.datagrams} datagrams on 127.0.0.1:{listener.port}")
    for failure in failures:
        print("FAIL", failure)
    print("nic-conformance:", "PASS" if not failures else "FAIL")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
