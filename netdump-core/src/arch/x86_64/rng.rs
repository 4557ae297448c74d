//! The source of the 64-bit cookie.
//!
//! RDRAND where CPUID reports it. Where it is absent the fallback mixes TSC jitter
//! sampled around PIT reads with install-time identity (MAC, IP) through SplitMix64.
//! The fallback is **not** cryptographically strong: an attacker who can guess the boot
//! timing to within a few thousand cycles can narrow the cookie down. It still defeats
//! blind injection by a host that cannot observe the boot; docs/SECURITY.md discusses it.

use super::io::{inb, rdtsc};
use rand_core::RngCore;

/// Which source produced the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSource {
    /// The CPU's RDRAND instruction.
    Rdrand,
    /// The fallback: TSC jitter around PIT reads, mixed with the caller's `identity`. Not
    /// cryptographically strong (see the module documentation).
    TscJitter,
}

/// A `RngCore` for the cookie: RDRAND when present, else the TSC-jitter fallback.
pub struct CookieRng {
    source: CookieSource,
    state: u64,
}

fn has_rdrand() -> bool {
    // CPUID leaf 1, ECX bit 30.
    let leaf = core::arch::x86_64::__cpuid(1);
    leaf.ecx & (1 << 30) != 0
}

#[target_feature(enable = "rdrand")]
fn rdrand64() -> Option<u64> {
    let mut v = 0u64;
    // Intel recommends up to 10 retries for a transient underflow.
    for _ in 0..10 {
        // Safe inside a function compiled with the feature; callers of this function
        // check CPUID first (calling it is `unsafe`).
        if core::arch::x86_64::_rdrand64_step(&mut v) == 1 {
            return Some(v);
        }
    }
    None
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl CookieRng {
    /// Picks RDRAND when available. `identity` (e.g. MAC and IP) is mixed into the
    /// fallback so that identical machines booting at once still differ.
    ///
    /// The fallback reads port 0x61 (the PIT gate, harmless) to add I/O timing jitter.
    pub fn new(identity: u64) -> Self {
        if has_rdrand() {
            // SAFETY: CPUID reported RDRAND.
            if unsafe { rdrand64() }.is_some() {
                return CookieRng { source: CookieSource::Rdrand, state: 0 };
            }
        }
        let mut state = identity ^ rdtsc();
        for _ in 0..64 {
            let t0 = rdtsc();
            // SAFETY: reading port 0x61 (system control port B) has no side effect.
            let _ = unsafe { inb(0x61) };
            let dt = rdtsc().wrapping_sub(t0);
            state ^= dt.rotate_left((dt & 63) as u32);
            splitmix64(&mut state);
        }
        CookieRng { source: CookieSource::TscJitter, state }
    }

    /// Which source this generator draws from (chosen once, at construction).
    pub fn source(&self) -> CookieSource {
        self.source
    }
}

impl RngCore for CookieRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        if self.source == CookieSource::Rdrand {
            // SAFETY: `source` is Rdrand only if CPUID reported the instruction.
            if let Some(v) = unsafe { rdrand64() } {
                return v;
            }
        }
        self.state ^= rdtsc();
        splitmix64(&mut self.state)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
