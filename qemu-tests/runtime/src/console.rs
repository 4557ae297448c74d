//! The console: [`print!`](crate::print) and [`println!`](crate::println) write to COM1
//! and hand the same bytes to a tee the kernel registers (netdump's console log ring).
//!
//! # Locking
//! Messages are serialised by a spin lock so lines from different CPUs do not interleave,
//! but the lock never blocks for good: a CPU that crashed (or took an exception) while
//! printing may never release it, and the crash path must still print. So
//! - normally a writer waits a bounded number of spins, then takes the lock over anyway;
//! - in crash mode ([`enter_crash_mode`], entered by the exception dispatcher and
//!   [`default_panic`](crate::default_panic); a kernel's own panic handler should call
//!   it first) a writer waits far less ([`CRASH_LOCK_SPINS`]: long enough for another
//!   CPU's message in flight, as when two CPUs panic at once) and then takes the lock
//!   over.
//!
//! Taking over can interleave two messages; it never deadlocks and never drops output.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::serial;

/// Spins before a writer assumes the lock holder will never finish. Far longer than any
/// message takes to print, short enough not to be noticed if it ever happens.
const MAX_LOCK_SPINS: u32 = 1 << 22;

/// Spins in crash mode: a few milliseconds at most under emulation, enough for a panic
/// message another CPU is printing to finish whole, short enough that a CPU that died
/// holding the lock delays the crash path by nothing that matters.
const CRASH_LOCK_SPINS: u32 = 1 << 16;

static LOCKED: AtomicBool = AtomicBool::new(false);
static CRASH_MODE: AtomicBool = AtomicBool::new(false);
/// The registered tee, a `fn(&[u8])`, or null.
static TEE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers a function that receives every byte the console prints, after it went to
/// the serial port (without the `\r` added before each `\n`).
///
/// The tee runs on every print, including from exception handlers and panics: it must not
/// print, allocate, block or take a lock a crashed CPU could hold. Replaces any earlier tee.
pub fn set_console_tee(tee: fn(&[u8])) {
    TEE.store(tee as *mut (), Ordering::Release);
}

/// Switches the console to crash mode for good: writers stop waiting for the lock.
pub fn enter_crash_mode() {
    CRASH_MODE.store(true, Ordering::Release);
}

/// Writes raw bytes to the console (serial and tee), as one message.
pub fn write_bytes(bytes: &[u8]) {
    locked(|| emit(bytes));
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    locked(|| {
        // `ConsoleWriter::write_str` never fails; a `Display` impl that returns an error
        // just ends its own output early, which is all a console can do about it.
        let _ = ConsoleWriter.write_fmt(args);
    });
}

/// Runs `print` holding the console lock, or having taken it over (see the module docs).
fn locked(print: impl FnOnce()) {
    let spins = if CRASH_MODE.load(Ordering::Acquire) { CRASH_LOCK_SPINS } else { MAX_LOCK_SPINS };
    for _ in 0..spins {
        if LOCKED.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            break;
        }
        core::hint::spin_loop();
    }
    print();
    LOCKED.store(false, Ordering::Release);
}

fn emit(bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            serial::write_byte(b'\r');
        }
        serial::write_byte(byte);
    }
    let tee = TEE.load(Ordering::Acquire);
    if !tee.is_null() {
        // SAFETY: the only non-null value ever stored in TEE is a `fn(&[u8])`, cast to a
        // pointer in `set_console_tee`; function pointers and data pointers have the same
        // size and representation on x86_64.
        let tee = unsafe { core::mem::transmute::<*mut (), fn(&[u8])>(tee) };
        tee(bytes);
    }
}

struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        emit(text.as_bytes());
        Ok(())
    }
}

/// Prints to the console (COM1 and the registered tee).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(format_args!($($arg)*))
    };
}

/// Prints to the console (COM1 and the registered tee), with a newline.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
