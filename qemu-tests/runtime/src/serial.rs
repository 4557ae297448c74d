//! A polled 16550 UART on COM1 (I/O port 0x3f8): 115200 baud, 8N1, FIFOs on, no
//! interrupts.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const DATA: u16 = 0; // transmit holding register; divisor latch low with DLAB
const INTERRUPT_ENABLE: u16 = 1; // divisor latch high with DLAB
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;

const LINE_CONTROL_DLAB: u8 = 0x80;
const LINE_CONTROL_8N1: u8 = 0x03;
const FIFO_ENABLE_AND_CLEAR: u8 = 0xc7;
const MODEM_CONTROL_DTR_RTS: u8 = 0x03;
const LINE_STATUS_THR_EMPTY: u8 = 0x20;

/// Upper bound on polls of the line status per byte, so that a missing or wedged UART
/// slows the console down instead of hanging the kernel (or its crash path).
const MAX_POLLS_PER_BYTE: u32 = 100_000;

fn write_register(register: u16, value: u8) {
    // SAFETY: COM1's registers are plain I/O ports with no memory side effects; the
    // runtime is the only user of COM1.
    unsafe { Port::<u8>::new(COM1 + register).write(value) }
}

fn read_register(register: u16) -> u8 {
    // SAFETY: as in `write_register`; reading the line status has no side effect on data.
    unsafe { Port::<u8>::new(COM1 + register).read() }
}

/// Programs the UART. Called once at boot, before anything is printed.
pub(crate) fn init() {
    write_register(INTERRUPT_ENABLE, 0);
    write_register(LINE_CONTROL, LINE_CONTROL_DLAB);
    write_register(DATA, 1); // divisor 1: 115200 baud
    write_register(INTERRUPT_ENABLE, 0);
    write_register(LINE_CONTROL, LINE_CONTROL_8N1);
    write_register(FIFO_CONTROL, FIFO_ENABLE_AND_CLEAR);
    write_register(MODEM_CONTROL, MODEM_CONTROL_DTR_RTS);
}

/// Sends one byte, waiting (boundedly) for room in the transmitter.
pub(crate) fn write_byte(byte: u8) {
    for _ in 0..MAX_POLLS_PER_BYTE {
        if read_register(LINE_STATUS) & LINE_STATUS_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    write_register(DATA, byte);
}
