//! Where a kernel keeps its installed [`crate::Netdump`]: a cell that normal code uses
//! briefly (e.g. to send netconsole lines) and that the panic path can always seize,
//! even when the crashed CPU was inside a normal use, without waiting on anything.
//!
//! This is one of the two places in netdump-core with `unsafe` (the other is `arch`).

#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const INSTALLING: u8 = 1;
const IDLE: u8 = 2;
const BUSY: u8 = 3;
const SEIZED: u8 = 4;

/// Why [`CrashCell::seize`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeizeError {
    /// Nothing was installed.
    Empty,
    /// The cell was already seized: a panic inside the dump, or a second CPU panicking.
    AlreadySeized,
}

/// A cell for a value that the crash path takes over for good.
pub struct CrashCell<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: access to `value` is serialised by `state`: only the caller that moved the
// state EMPTY→INSTALLING writes it; only the caller that moved it IDLE→BUSY or
// (any installed state)→SEIZED gets a reference, and SEIZED is never left.
unsafe impl<T: Send> Sync for CrashCell<T> {}

impl<T> Default for CrashCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> CrashCell<T> {
    /// An empty cell; [`install`](Self::install) fills it.
    pub const fn new() -> Self {
        CrashCell { state: AtomicU8::new(EMPTY), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// Stores the value once; returns it back if the cell was already filled.
    pub fn install(&self, value: T) -> Result<(), T> {
        if self.state.compare_exchange(EMPTY, INSTALLING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(value);
        }
        // SAFETY: the state is INSTALLING, which only this caller could set; no one else
        // reads or writes `value` until it becomes IDLE below.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(IDLE, Ordering::Release);
        Ok(())
    }

    /// Normal-time use: runs `f` on the value unless it is absent, in use, or seized.
    /// Never waits.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.state.compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed).ok()?;
        // SAFETY: this caller moved IDLE→BUSY, so the value is initialised and no other
        // normal-time user holds it. A concurrent `seize` may also hand it out; that only
        // happens when the kernel is crashing and this CPU is interrupted for good (the
        // documented contract of `seize`).
        let r = f(unsafe { (*self.value.get()).assume_init_mut() });
        let _ = self.state.compare_exchange(BUSY, IDLE, Ordering::Release, Ordering::Relaxed);
        Some(r)
    }

    /// Crash-time takeover: returns the value for the rest of the kernel's life.
    ///
    /// Succeeds once. It also succeeds when a normal-time user is inside
    /// [`try_with`](Self::try_with) — that user is the crashed context (or a CPU that
    /// the crashing kernel stops), and the dump resets the NIC from scratch anyway.
    /// A second call (a panic inside the dump, another CPU panicking) fails at once.
    // `&self` → `&mut T` is the point of the cell: exclusivity comes from the one-way
    // transition to SEIZED, not from the borrow checker.
    #[allow(clippy::mut_from_ref)]
    pub fn seize(&self) -> Result<&mut T, SeizeError> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            match cur {
                EMPTY | INSTALLING => return Err(SeizeError::Empty),
                SEIZED => return Err(SeizeError::AlreadySeized),
                _ => match self.state.compare_exchange(cur, SEIZED, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                },
            }
        }
        // SAFETY: the state was IDLE or BUSY, so the value is initialised; this caller
        // alone moved it to SEIZED, which is final, so no later caller gets a reference.
        Ok(unsafe { (*self.value.get()).assume_init_mut() })
    }

    /// Whether the crash path has taken the value.
    pub fn is_seized(&self) -> bool {
        self.state.load(Ordering::Acquire) == SEIZED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seize_succeeds_once_and_second_seize_fails() {
        let c = CrashCell::new();
        assert_eq!(c.seize().err(), Some(SeizeError::Empty));
        c.install(5u32).unwrap();
        assert_eq!(c.install(6), Err(6));
        *c.seize().unwrap() += 1;
        assert_eq!(c.seize().err(), Some(SeizeError::AlreadySeized));
        assert!(c.try_with(|v| *v).is_none());
    }

    #[test]
    fn seize_works_from_inside_a_normal_use() {
        let c = CrashCell::new();
        c.install(1u32).unwrap();
        let inner = c.try_with(|_| c.seize().map(|v| *v)).unwrap();
        assert_eq!(inner, Ok(1));
        assert!(c.try_with(|_| ()).is_none(), "normal use is over once seized");
    }

    #[test]
    fn normal_use_is_not_reentrant() {
        let c = CrashCell::new();
        c.install(1u32).unwrap();
        assert_eq!(c.try_with(|_| c.try_with(|_| ())), Some(None));
        assert_eq!(c.try_with(|v| *v), Some(1));
    }
}
