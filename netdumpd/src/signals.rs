//! SIGINT and SIGTERM end the server cleanly: the loop sees the flag within its poll
//! interval and marks dumps still being received incomplete before it returns. A second
//! signal exits at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static TERMINATION_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_termination_signal(_signal: libc::c_int) {
    if TERMINATION_REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT/SIGTERM handler (the daemon's `main` does; tests do not).
pub fn install_termination_handler() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_termination_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only touches an atomic and calls _exit, both
        // async-signal-safe; it has the signature signal(2) expects.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since the handler was installed.
pub fn termination_requested() -> bool {
    TERMINATION_REQUESTED.load(Ordering::SeqCst)
}
