//! Where the data phase's time goes (feature `profile`, off by default): the send loop
//! adds each round's time to the step that spent it, so that a bench can say whether a
//! dump waits (for the server's ACKs, for the NIC's ring) or works, and at what.
//!
//! A round of the loop reclaims sent frames and reads what the server sent (`receive`),
//! resends what is due and produces new payloads (`fill`: reading memory, the zero
//! check, the copy into the window and the payload's check), builds their frames in the
//! NIC's buffers (`transmit`: headers, the copy, the descriptor) and rings the doorbell
//! (`doorbell`: on an emulated NIC whose device sends on the doorbell's write, the
//! device's work too). A round that neither read an ACK nor sent a packet is *idle*: all
//! of its time counts as waiting. Off, none of this is compiled; on, a round reads the
//! clock about five times more.

/// The data phase's time by step, nanoseconds of [`Clock::now_ns`](crate::clock::Clock::now_ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendProfile {
    /// Rounds of the send loop.
    pub rounds: u64,
    /// Rounds that neither read an ACK nor sent a packet.
    pub idle_rounds: u64,
    /// The idle rounds' time: waiting for the server or the NIC.
    pub idle_ns: u64,
    /// Busy rounds: reclaiming sent frames and reading what the server sent.
    pub receive_ns: u64,
    /// Busy rounds: resending and producing payloads.
    pub fill_ns: u64,
    /// Busy rounds: building frames into the NIC's buffers.
    pub transmit_ns: u64,
    /// Busy rounds: the doorbell.
    pub doorbell_ns: u64,
}

/// The steps of a round, in [`Round`]'s array.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Receive = 0,
    Fill = 1,
    Transmit = 2,
    Doorbell = 3,
}

/// One round being timed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    started: u64,
    last: u64,
    steps: [u64; 4],
    busy: bool,
}

impl Round {
    pub(crate) fn start(now_ns: u64) -> Self {
        Round { started: now_ns, last: now_ns, steps: [0; 4], busy: false }
    }

    /// The time since the last lap goes to `step`.
    pub(crate) fn lap(&mut self, now_ns: u64, step: Step) {
        self.steps[step as usize] += now_ns.saturating_sub(self.last);
        self.last = now_ns;
    }

    /// The round read an ACK or sent a packet.
    pub(crate) fn busy(&mut self) {
        self.busy = true;
    }
}

impl SendProfile {
    /// Adds a finished round (its last lap already taken).
    pub(crate) fn add(&mut self, round: Round) {
        self.rounds += 1;
        if round.busy {
            self.receive_ns += round.steps[Step::Receive as usize];
            self.fill_ns += round.steps[Step::Fill as usize];
            self.transmit_ns += round.steps[Step::Transmit as usize];
            self.doorbell_ns += round.steps[Step::Doorbell as usize];
        } else {
            self.idle_rounds += 1;
            self.idle_ns += round.last.saturating_sub(round.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_round_splits_by_step_and_an_idle_one_counts_whole_as_waiting() {
        let mut p = SendProfile::default();
        let mut r = Round::start(1_000);
        r.lap(1_300, Step::Receive);
        r.lap(2_000, Step::Fill);
        r.lap(2_100, Step::Transmit);
        r.lap(2_150, Step::Fill);
        r.lap(2_900, Step::Doorbell);
        r.busy();
        p.add(r);
        let mut idle = Round::start(3_000);
        idle.lap(3_400, Step::Receive);
        idle.lap(3_450, Step::Doorbell);
        p.add(idle);
        assert_eq!(
            p,
            SendProfile {
                rounds: 2,
                idle_rounds: 1,
                idle_ns: 450,
                receive_ns: 300,
                fill_ns: 750,
                transmit_ns: 100,
                doorbell_ns: 750
            }
        );
    }
}
