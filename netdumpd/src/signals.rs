//! SIGINT and SIGTERM end the server cleanly: the loop sees the flag within its poll
//! interval and marks dumps still being received incomplete before it returns. A second
//! signal exits at once (status 130). SIGHUP (which would otherwise end the process
//! mid-dump) makes the loop write the registry and `stats.json` now and read the
//! configuration again ([`crate::reload`]).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static TERMINATION_REQUESTED: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_signal: libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

extern "C" fn on_termination_signal(_signal: libc::c_int) {
    if TERMINATION_REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(crate::exit::FORCED.into()) };
    }
}

/// Installs the SIGINT/SIGTERM and SIGHUP handlers (the daemon's `main` does; tests do
/// not).
pub fn install_termination_handler() -> io::Result<()> {
    let termination = on_termination_signal as extern "C" fn(libc::c_int);
    let hangup = on_hangup as extern "C" fn(libc::c_int);
    for (signal, handler) in [(libc::SIGINT, termination), (libc::SIGTERM, termination), (libc::SIGHUP, hangup)] {
        // SAFETY: each handler only touches an atomic (and may call _exit), all
        // async-signal-safe; it has the signature signal(2) expects.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGHUP arrived since the last call.
pub fn take_hangup() -> bool {
    HANGUP.swap(false, Ordering::SeqCst)
}

/// Whether SIGINT or SIGTERM arrived since the handler was installed.
pub fn termination_requested() -> bool {
    TERMINATION_REQUESTED.load(Ordering::SeqCst)
}
