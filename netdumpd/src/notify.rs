//! Readiness and state for systemd (`Type=notify`): `READY=1` once the socket is bound,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` when a termination
//! signal begins the shutdown, and a `STATUS=` line with each. Datagrams on
//! `$NOTIFY_SOCKET` (sd_notify(3)); without that variable (not under systemd) nothing is
//! sent. A failure to send is logged at debug level and otherwise ignored: the service
//! manager's view is a convenience, the dumps are not.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

/// The server is bound and serving.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (ends with [`ready`]). systemd's `Type=notify-reload` wants the
/// monotonic clock beside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("reloading the configuration")]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading the configuration")]),
    }
}

/// The shutdown begins: dumps in progress are being closed, hooks finish.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: closing dumps in progress")]);
}
