//! HELLO: replays of retired cookies refused first, then the HELLO budget, the name and
//! the registry; the register hook queued on the job pool.

use std::net::SocketAddr;
use std::time::Instant;

use netdump_core::proto::{Header, Hello, HelloAck, HelloStatus, MAX_DATAGRAM, Message, valid_name};

use super::Server;
use crate::hooks::HookEvent;
use crate::registry::{Client, Registration, RegistryError};
use crate::stats::DropReason;

impl Server {
    /// HELLO: a replay of a retired cookie is counted and dropped before anything else
    /// (no reply, no work); then the HELLO budget (all sources, and each source), then
    /// the name, then the registry.
    pub(super) fn on_hello(&mut self, header: &Header, hello: &Hello<'_>, from: SocketAddr, now: Instant) {
        let max_payload = MAX_DATAGRAM as u32;
        let cookie = header.cookie;
        if let Some(retired) = self.registry.retired(cookie) {
            let detail = format!("HELLO from {:?} with cookie {cookie:016x}, retired", retired.name);
            return self.drop_packet(DropReason::ReplayedHello, from, None, &detail);
        }
        if !self.hello_budget.take(from.ip(), now) {
            return self.drop_packet(DropReason::RateLimited, from, None, &"HELLO beyond the HELLO budget");
        }
        if !valid_name(hello.name) {
            let name = String::from_utf8_lossy(hello.name);
            self.drop_packet(
                DropReason::BadField,
                from,
                None,
                &format_args!("HELLO refused: invalid client name {name:?}"),
            );
            let ack = HelloAck { status: HelloStatus::Refused, max_payload };
            return self.outbox.send(from, cookie, header.seq, Message::HelloAck(ack));
        }
        let client = Client {
            cookie,
            name: String::from_utf8_lossy(hello.name).into_owned(),
            mac: hello.mac,
            ip: hello.ip.into(),
            source: from,
            mtu: hello.mtu,
            page_size: hello.page_size,
            memory_bytes: hello.memory_bytes,
            registered_at: crate::utc::rfc3339(crate::utc::now()),
            dump: None,
        };
        let name = client.name.clone();
        let for_hook = client.clone();
        match self.registry.register(client) {
            Ok(outcome) => {
                log_registration(&name, cookie, from, outcome);
                if matches!(outcome, Registration::New | Registration::Replaced { .. }) {
                    self.registration_hook(&for_hook);
                }
            }
            Err(RegistryError::Full) => {
                return self.drop_packet(DropReason::RegistryFull, from, None, &format_args!("HELLO from {name}"));
            }
            Err(RegistryError::Retired) => {
                return self.drop_packet(DropReason::ReplayedHello, from, None, &format_args!("HELLO from {name}"));
            }
        }
        let ack = HelloAck { status: HelloStatus::Registered, max_payload };
        self.outbox.send(from, cookie, header.seq, Message::HelloAck(ack));
    }

    /// Queues the register hook (`<client IP> <client name>`); skipped (and counted)
    /// when the work queue is full.
    pub(super) fn registration_hook(&mut self, client: &Client) {
        let env = vec![
            ("NETDUMP_CLIENT".into(), client.name.clone()),
            ("NETDUMP_CLIENT_IP".into(), client.ip.to_string()),
            ("NETDUMP_CLIENT_MAC".into(), client.mac_string()),
            ("NETDUMP_CLIENT_SOURCE".into(), client.source.to_string()),
        ];
        let args = vec![client.ip.to_string(), client.name.clone()];
        if let Some(call) = self.config.hooks.call(HookEvent::Register, args, env)
            && self
                .jobs
                .submit(false, move || {
                    call.run();
                })
                .is_err()
        {
            self.stats.job_skipped();
            tracing::warn!(client = %client.name, "work queue full: register hook skipped");
        }
    }
}

fn log_registration(name: &str, cookie: u64, from: SocketAddr, outcome: Registration) {
    let cookie = format_args!("{cookie:016x}");
    match outcome {
        Registration::New => tracing::info!(client = name, %from, %cookie, "client registered"),
        Registration::Replaced { old_cookie } => {
            tracing::info!(client = name, %from, %cookie, old_cookie = format_args!("{old_cookie:016x}"), "client re-registered")
        }
        Registration::Updated => tracing::info!(client = name, %from, %cookie, "client registration updated"),
        Registration::Unchanged => tracing::debug!(client = name, %from, %cookie, "repeated HELLO"),
    }
}
