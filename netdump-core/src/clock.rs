//! Time for bounded waits. The crash path never waits without a deadline.

/// A monotonic clock in microseconds. At crash time this must not depend on interrupts
/// (on x86_64 use [`crate::arch::x86_64::TscClock`]).
pub trait Clock {
    /// Microseconds since an arbitrary fixed point (boot, say); never decreases.
    fn now_us(&self) -> u64;
    /// Nanoseconds on the same scale, for measuring steps shorter than a microsecond (only
    /// with the `profile` feature, so that a kernel without it links nothing more); the
    /// default is [`now_us`](Self::now_us) × 1000.
    #[cfg(feature = "profile")]
    fn now_ns(&self) -> u64 {
        self.now_us().saturating_mul(1000)
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
    #[cfg(feature = "profile")]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A point in time after which a wait gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(u64);

impl Deadline {
    /// The deadline `us` microseconds from now (saturating).
    pub fn after(clock: &dyn Clock, us: u64) -> Self {
        Deadline(clock.now_us().saturating_add(us))
    }
    /// True once `clock` has reached the deadline.
    pub fn passed(&self, clock: &dyn Clock) -> bool {
        clock.now_us() >= self.0
    }
}
