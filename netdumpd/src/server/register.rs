//! HELLO: replays of retired cookies refused first, then the HELLO budget, the name and
//! the registry; the register hook queued on the job pool.

use std::net::SocketAddr;
use std::time::Instant;

use netdump_core::proto::{
    Header, Hello, HelloAck, HelloAckV2, HelloStatus, HelloTerms, HelloV2, MAX_DATAGRAM, Message, VERSION_1, VERSION_2,
    features, valid_name,
};

use super::Server;
use crate::channel::Channel;
use crate::hooks::HookEvent;
use crate::registry::{Client, Registration, RegistryError};
use crate::stats::DropReason;

impl Server {
    /// HELLO (version 1): a replay of a retired cookie is counted and dropped before
    /// anything else (no reply, no work); then the HELLO budget (all sources, and each
    /// source), then the name, then the registry. With `require_encryption` it is refused
    /// (HELLO_ACK refused, and a log line that says why).
    pub(super) fn on_hello(&mut self, header: &Header, hello: &Hello<'_>, from: SocketAddr, now: Instant) {
        let max_payload = MAX_DATAGRAM as u32;
        let cookie = header.cookie;
        if !self.hello_admitted(cookie, from, now) || !self.hello_name_valid(header, hello, from, None) {
            return;
        }
        if self.registry.channel(cookie).is_some() {
            let detail = format_args!("version-1 HELLO for cookie {cookie:016x}, registered encrypted");
            return self.drop_packet(DropReason::HandshakeMismatch, from, None, &detail);
        }
        if self.config.encryption.require_encryption {
            self.refuse_plaintext(hello.name, from, "a version-1 HELLO (no encryption)");
            let ack = HelloAck { status: HelloStatus::Refused, max_payload };
            return self.reply(from, cookie, header.version, header.seq, Message::HelloAck(ack));
        }
        if self.register_client(header, hello, from, VERSION_1, 0, None) {
            let ack = HelloAck { status: HelloStatus::Registered, max_payload };
            self.reply(from, cookie, header.version, header.seq, Message::HelloAck(ack));
        }
    }

    /// HELLO (version 2): as version 1, then the features. Encryption asked for: the
    /// key the client names by id, the handshake's message 1 read (snow), message 2
    /// written with the terms as its payload; a repeated HELLO (the same message 1) gets
    /// the same HELLO_ACK again, byte for byte, and a HELLO with another handshake for a
    /// cookie registered encrypted is dropped (`handshake_mismatch`): the first handshake
    /// of a cookie holds.
    pub(super) fn on_hello_v2(&mut self, header: &Header, hello: &HelloV2<'_>, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let required = if self.config.encryption.require_encryption { features::ENCRYPTED } else { 0 };
        let terms = |status, features| HelloTerms { status, max_payload: MAX_DATAGRAM as u32, features, required };
        if !self.hello_admitted(cookie, from, now)
            || !self.hello_name_valid(header, &hello.hello, from, Some(terms(HelloStatus::Refused, 0)))
        {
            return;
        }
        let asks_encryption = hello.features & features::ENCRYPTED != 0;
        // Filtering is granted to whoever asks (the server records the excluded runs),
        // unless the configuration says every page must come; compression needs nothing
        // of the server but its decoder: granted when asked.
        let filter = if self.config.page_filtering { hello.features & features::FILTER } else { 0 };
        // Failover too: a client that lists other servers may be sent on to them.
        let optional = filter | (hello.features & (features::COMPRESSED | features::FAILOVER));
        if let Some(channel) = self.registry.channel(cookie) {
            if !channel.is_handshake_of(hello) {
                let detail = format_args!("HELLO for cookie {cookie:016x} with another handshake than it registered");
                return self.drop_packet(DropReason::HandshakeMismatch, from, None, &detail);
            }
            // A repeated HELLO: its HELLO_ACK was lost. The same answer again.
            let ack = channel.hello_ack.clone();
            if let Ok(ack) = HelloAckV2::parse(&ack) {
                self.register_client(header, &hello.hello, from, VERSION_2, ack.terms.features, None);
                self.reply(from, cookie, header.version, header.seq, Message::HelloAckV2(ack));
            }
            return;
        }
        if asks_encryption && self.registry.get(cookie).is_some() {
            let detail = format_args!("HELLO asking for encryption for cookie {cookie:016x}, registered without");
            return self.drop_packet(DropReason::HandshakeMismatch, from, None, &detail);
        }
        let refuse = |server: &mut Server, status| {
            let ack = HelloAckV2 { terms: terms(status, 0), handshake: &[] };
            server.reply(from, cookie, header.version, header.seq, Message::HelloAckV2(ack));
        };
        if !asks_encryption {
            if required != 0 {
                self.refuse_plaintext(hello.hello.name, from, "a HELLO without the ENCRYPTED feature");
                return refuse(self, HelloStatus::EncryptionRequired);
            }
            // The cheaper check (DATA with CHECK_XXH64) is granted to whoever asks.
            let granted = optional | (hello.features & features::XXH64_CHECK);
            if self.register_client(header, &hello.hello, from, VERSION_2, granted, None) {
                let ack = HelloAckV2 { terms: terms(HelloStatus::Registered, granted), handshake: &[] };
                self.reply(from, cookie, header.version, header.seq, Message::HelloAckV2(ack));
            }
            return;
        }
        let name = String::from_utf8_lossy(hello.hello.name).into_owned();
        if self.keys.is_empty() {
            tracing::warn!(client = %name, %from, "HELLO asks for encryption, and this server has no private key: refused (feature_unsupported)");
            return refuse(self, HelloStatus::FeatureUnsupported);
        }
        let Some(key) = self.keys.find(&hello.key_id) else {
            let id: String = hello.key_id.iter().map(|b| format!("{b:02x}")).collect();
            tracing::warn!(client = %name, %from, key_id = %id, "HELLO names a server key this server does not hold: refused (unknown_key)");
            return refuse(self, HelloStatus::UnknownKey);
        };
        let granted = features::ENCRYPTED | optional;
        let channel = match Channel::accept(key, cookie, hello, terms(HelloStatus::Registered, granted)) {
            Ok(c) => c,
            Err(_) => {
                self.drop_packet(
                    DropReason::BadTag,
                    from,
                    None,
                    &format_args!("HELLO from {name:?}: handshake message 1 did not verify"),
                );
                return refuse(self, HelloStatus::HandshakeFailed);
            }
        };
        let ack = channel.hello_ack.clone();
        if self.register_client(header, &hello.hello, from, VERSION_2, granted, Some(channel))
            && let Ok(ack) = HelloAckV2::parse(&ack)
        {
            self.reply(from, cookie, header.version, header.seq, Message::HelloAckV2(ack));
        }
    }

    /// The checks before any work: not a retired cookie (a replay), within the HELLO
    /// budget. False when dropped.
    fn hello_admitted(&mut self, cookie: u64, from: SocketAddr, now: Instant) -> bool {
        if let Some(retired) = self.registry.retired(cookie) {
            let detail = format!("HELLO from {:?} with cookie {cookie:016x}, retired", retired.name);
            self.drop_packet(DropReason::ReplayedHello, from, None, &detail);
            return false;
        }
        if !self.hello_budget.take(from.ip(), now) {
            self.drop_packet(DropReason::RateLimited, from, None, &"HELLO beyond the HELLO budget");
            return false;
        }
        true
    }

    /// False (refused in a HELLO_ACK of the request's version: `v2_terms` for version 2)
    /// when the name is not valid.
    fn hello_name_valid(
        &mut self,
        header: &Header,
        hello: &Hello<'_>,
        from: SocketAddr,
        v2_terms: Option<HelloTerms>,
    ) -> bool {
        if valid_name(hello.name) {
            return true;
        }
        let name = String::from_utf8_lossy(hello.name);
        self.drop_packet(
            DropReason::BadField,
            from,
            None,
            &format_args!("HELLO refused: invalid client name {name:?}"),
        );
        let reply = match &v2_terms {
            Some(terms) => Message::HelloAckV2(HelloAckV2 { terms: *terms, handshake: &[] }),
            None => Message::HelloAck(HelloAck { status: HelloStatus::Refused, max_payload: MAX_DATAGRAM as u32 }),
        };
        self.reply(from, header.cookie, header.version, header.seq, reply);
        false
    }

    /// Logs why a plaintext client is refused (`require_encryption`).
    fn refuse_plaintext(&mut self, name: &[u8], from: SocketAddr, what: &str) {
        let name = String::from_utf8_lossy(name);
        tracing::warn!(client = %name, %from, "HELLO refused: encryption is required (require_encryption) and the client sent {what}");
    }

    /// Registers the client of `hello` (with its channel, when encrypted): logs it and
    /// queues the register hook. False when the registry refused it (dropped, counted).
    fn register_client(
        &mut self,
        header: &Header,
        hello: &Hello<'_>,
        from: SocketAddr,
        protocol_version: u8,
        features: u32,
        channel: Option<Channel>,
    ) -> bool {
        let cookie = header.cookie;
        let encrypted = channel.is_some() || self.registry.channel(cookie).is_some();
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
            protocol_version,
            encrypted,
            features,
        };
        let name = client.name.clone();
        let for_hook = client.clone();
        match self.registry.register(client, channel) {
            Ok(outcome) => {
                log_registration(&name, cookie, from, outcome, protocol_version, encrypted);
                if matches!(outcome, Registration::New | Registration::Replaced { .. }) {
                    self.registration_hook(&for_hook);
                }
                true
            }
            Err(RegistryError::Full) => {
                self.drop_packet(DropReason::RegistryFull, from, None, &format_args!("HELLO from {name}"));
                false
            }
            Err(RegistryError::Retired) => {
                self.drop_packet(DropReason::ReplayedHello, from, None, &format_args!("HELLO from {name}"));
                false
            }
        }
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

fn log_registration(name: &str, cookie: u64, from: SocketAddr, outcome: Registration, version: u8, encrypted: bool) {
    let cookie = format_args!("{cookie:016x}");
    match outcome {
        Registration::New => tracing::info!(client = name, %from, %cookie, version, encrypted, "client registered"),
        Registration::Replaced { old_cookie } => {
            tracing::info!(client = name, %from, %cookie, version, encrypted, old_cookie = format_args!("{old_cookie:016x}"), "client re-registered")
        }
        Registration::Updated => {
            tracing::info!(client = name, %from, %cookie, version, encrypted, "client registration updated")
        }
        Registration::Unchanged => tracing::debug!(client = name, %from, %cookie, "repeated HELLO"),
    }
}
