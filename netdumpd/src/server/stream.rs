//! DATA, FINISH and ABORT of a dump being received.

use std::net::SocketAddr;
use std::time::Instant;

use netdump_core::proto::{Ack, Check, Data, Finish, FinishAck, FinishStatus, Header, Message, TextMessage, flags};

use super::{Server, send_ack};
use crate::stats::{DropReason, DumpEnd};

impl Server {
    pub(super) fn on_data(
        &mut self,
        header: &Header,
        data: &Data<'_>,
        payload: &[u8],
        payload_check: Option<u32>,
        from: SocketAddr,
        now: Instant,
    ) {
        let cookie = header.cookie;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            if self.registry.get(cookie).is_some() {
                // Registered, but its dump is gone (ended long ago, or a server restart):
                // tell it to stop rather than let it retransmit until it gives up.
                self.drop_packet(
                    DropReason::SessionClosed,
                    from,
                    None,
                    &format_args!("DATA from cookie {cookie:016x}"),
                );
                let ack = Ack { stop: true, bitmap: &[] };
                self.reply_unsolicited(from, cookie, header.version, 0, Message::Ack(ack));
            } else {
                self.drop_packet(
                    DropReason::UnknownCookie,
                    from,
                    None,
                    &format_args!("DATA from cookie {cookie:016x}"),
                );
            }
            return;
        };
        let was_receiving = s.is_receiving();
        // CHECK_XXH64 means something only where the header's check is XXH64 (an
        // unsealed version-2 packet): the session sees it only there.
        let flags = match header.check() {
            Check::Xxh64 => header.flags,
            Check::Crc32 => header.flags & !flags::CHECK_XXH64,
        };
        let outcome = s.on_data_checked(from, flags, header.seq, data, payload, payload_check, now);
        if outcome.ack_now {
            send_ack(&mut self.outbox, &mut self.registry, s);
        }
        if was_receiving && !s.is_receiving() {
            self.stats.dump_ended(DumpEnd::Incomplete);
        }
        if let Some(reason) = outcome.dropped {
            self.note_session_drop(reason, from, cookie);
        }
    }

    pub(super) fn on_finish(&mut self, header: &Header, finish: &Finish, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let after = self.config.after_dump;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            if self.registry.get(cookie).is_some() {
                let ack = FinishAck { status: FinishStatus::UnknownSession, action: after };
                self.reply_unsolicited(from, cookie, header.version, header.seq, Message::FinishAck(ack));
            } else {
                self.drop_packet(
                    DropReason::UnknownCookie,
                    from,
                    None,
                    &format_args!("FINISH from cookie {cookie:016x}"),
                );
            }
            return;
        };
        let was_receiving = s.is_receiving();
        match s.on_finish(from, header.seq, finish, after, now) {
            Ok(ack) => {
                // Counted before the answer leaves: whoever hears it sees the counters.
                if was_receiving {
                    let end =
                        if ack.status == FinishStatus::Verified { DumpEnd::Complete } else { DumpEnd::Incomplete };
                    self.stats.dump_ended(end);
                }
                self.reply(from, cookie, header.version, header.seq, Message::FinishAck(ack));
            }
            Err(reason) => self.note_session_drop(reason, from, cookie),
        }
    }

    pub(super) fn on_abort(&mut self, header: &Header, abort: &TextMessage<'_>, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            let reason =
                if self.registry.get(cookie).is_some() { DropReason::SessionClosed } else { DropReason::UnknownCookie };
            return self.drop_packet(reason, from, None, &format_args!("ABORT from cookie {cookie:016x}"));
        };
        let was_receiving = s.is_receiving();
        match s.on_abort(from, abort.code, abort.text, now) {
            Ok(()) if was_receiving => self.stats.dump_ended(DumpEnd::Incomplete),
            Ok(()) => {}
            Err(reason) => self.note_session_drop(reason, from, cookie),
        }
    }
}
