//! The sender's state for one read transfer, without I/O: which blocks go out next, what
//! an ACK means, what a timeout resends. Blocks are numbered from 1 as u64 internally and
//! wrap to 0 on the wire past 65535 (as tftpd-hpa does), so any file size works.
//!
//! Only a timeout resends. An ACK for a block already acknowledged (a duplicate, or the
//! client's "I got nothing new") is ignored: answering duplicates with data is the
//! Sorcerer's Apprentice bug (RFC 1123 4.2.3.1), which doubles traffic on every delay.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// New blocks acknowledged; more to send.
    Progress,
    /// The final block is acknowledged: the transfer is complete.
    Done,
    /// Nothing new (duplicate, stale or unknown block): do nothing.
    Ignored,
}

#[derive(Debug, Clone)]
pub(super) struct Window {
    len: u64,
    blksize: u64,
    window: u64,
    /// The final block's number: a short (possibly empty) block ends the transfer.
    last: u64,
    /// First block not yet acknowledged; 0 while the OACK (block 0) awaits its ACK.
    base: u64,
    /// Next block to send.
    next: u64,
}

impl Window {
    pub(super) fn new(len: u64, blksize: u16, window: u16, oack: bool) -> Window {
        let blksize = blksize.max(1) as u64;
        let base = if oack { 0 } else { 1 };
        Window {
            len,
            blksize,
            window: window.max(1) as u64,
            last: len / blksize + 1,
            base,
            next: base,
        }
    }

    /// The OACK is out and its ACK 0 has not come yet.
    pub(super) fn awaiting_oack_ack(&self) -> bool {
        self.base == 0
    }

    /// Blocks to send now (empty while waiting for the OACK's ACK or a full window's).
    pub(super) fn due(&self) -> Range<u64> {
        if self.base == 0 {
            return 0..0;
        }
        let end = (self.base + self.window).min(self.last + 1);
        self.next.min(end)..end
    }

    pub(super) fn sent_through(&mut self, end: u64) {
        self.next = self.next.max(end);
    }

    /// The wire number and byte range of block `n`.
    pub(super) fn block(&self, n: u64) -> (u16, Range<usize>) {
        let start = ((n - 1) * self.blksize).min(self.len);
        let end = (start + self.blksize).min(self.len);
        ((n & 0xffff) as u16, start as usize..end as usize)
    }

    pub(super) fn on_ack(&mut self, wire: u16) -> Ack {
        if self.base == 0 {
            if wire == 0 {
                self.base = 1;
                self.next = 1;
                return Ack::Progress;
            }
            return Ack::Ignored;
        }
        // Which outstanding block has this wire number? The window is at most 65535
        // blocks, so at most one does.
        let offset = wire.wrapping_sub((self.base & 0xffff) as u16) as u64;
        let n = self.base + offset;
        if n >= self.next {
            return Ack::Ignored;
        }
        self.base = n + 1;
        if n == self.last {
            return Ack::Done;
        }
        // RFC 7440: an ACK inside the window means the blocks after it were lost; go on
        // from the one after it.
        self.next = self.base;
        Ack::Progress
    }

    /// A timeout: everything unacknowledged goes out again. Returns how many packets that
    /// resends (the OACK counts as one).
    pub(super) fn rewind(&mut self) -> u64 {
        if self.base == 0 {
            return 1;
        }
        let n = self.next - self.base;
        self.next = self.base;
        n
    }

    pub(super) fn acknowledged_bytes(&self) -> u64 {
        if self.base <= 1 {
            return 0;
        }
        ((self.base - 1) * self.blksize).min(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockstep_small_file() {
        let mut w = Window::new(1000, 512, 1, false);
        assert_eq!(w.due(), 1..2);
        assert_eq!(w.block(1), (1, 0..512));
        w.sent_through(2);
        assert_eq!(w.due(), 2..2);
        assert_eq!(w.on_ack(1), Ack::Progress);
        assert_eq!(w.due(), 2..3);
        assert_eq!(w.block(2), (2, 512..1000));
        w.sent_through(3);
        assert_eq!(w.on_ack(2), Ack::Done);
    }

    #[test]
    fn exact_multiple_ends_with_empty_block() {
        let mut w = Window::new(1024, 512, 1, false);
        for n in 1..=2 {
            w.sent_through(n + 1);
            assert_eq!(w.on_ack(n as u16), Ack::Progress);
        }
        assert_eq!(w.due(), 3..4);
        assert_eq!(w.block(3), (3, 1024..1024));
        w.sent_through(4);
        assert_eq!(w.on_ack(3), Ack::Done);
        // Empty file: one empty block.
        let w = Window::new(0, 512, 1, false);
        assert_eq!(w.due(), 1..2);
        assert_eq!(w.block(1), (1, 0..0));
    }

    #[test]
    fn duplicate_acks_send_nothing() {
        let mut w = Window::new(10_000, 512, 1, false);
        w.sent_through(2);
        assert_eq!(w.on_ack(1), Ack::Progress);
        w.sent_through(3);
        // The ACK for block 1 again (the client's retransmit crossing our DATA 2).
        assert_eq!(w.on_ack(1), Ack::Ignored);
        assert_eq!(w.due(), 3..3, "a duplicate ACK must not trigger a send");
        // An ACK from the future is ignored too.
        assert_eq!(w.on_ack(9), Ack::Ignored);
    }

    #[test]
    fn oack_then_ack_zero() {
        let mut w = Window::new(100, 512, 1, true);
        assert!(w.awaiting_oack_ack());
        assert_eq!(w.due(), 0..0);
        assert_eq!(w.on_ack(1), Ack::Ignored);
        assert_eq!(w.rewind(), 1);
        assert_eq!(w.on_ack(0), Ack::Progress);
        assert_eq!(w.due(), 1..2);
    }

    #[test]
    fn rollover_past_65535() {
        // 70000 blocks of 8 bytes.
        let len = 8 * 70_000 + 3;
        let mut w = Window::new(len, 8, 1, false);
        for n in 1..=70_001u64 {
            let r = w.due();
            assert_eq!(r, n..n + 1);
            let (wire, bytes) = w.block(n);
            assert_eq!(wire as u64, n % 65536);
            w.sent_through(n + 1);
            let a = w.on_ack(wire);
            if n == 70_001 {
                assert_eq!(bytes.len(), 3);
                assert_eq!(a, Ack::Done);
            } else {
                assert_eq!(a, Ack::Progress, "block {n}");
            }
        }
        assert_eq!(w.block(65536).0, 0);
    }

    #[test]
    fn window_full_and_partial_acks() {
        let mut w = Window::new(512 * 100, 512, 16, false);
        assert_eq!(w.due(), 1..17);
        w.sent_through(17);
        assert_eq!(w.due(), 17..17);
        // Full window acknowledged.
        assert_eq!(w.on_ack(16), Ack::Progress);
        assert_eq!(w.due(), 17..33);
        w.sent_through(33);
        // Client got through 20 only: resume at 21.
        assert_eq!(w.on_ack(20), Ack::Progress);
        assert_eq!(w.due(), 21..37);
        w.sent_through(37);
        // Stale ACK of 20 again: ignored.
        assert_eq!(w.on_ack(20), Ack::Ignored);
        assert_eq!(w.rewind(), 16);
        assert_eq!(w.due(), 21..37);
        assert_eq!(w.acknowledged_bytes(), 20 * 512);
    }

    #[test]
    fn window_at_the_end_is_short() {
        let mut w = Window::new(512 * 3 + 1, 512, 16, false);
        assert_eq!(w.due(), 1..5);
        w.sent_through(5);
        assert_eq!(w.on_ack(4), Ack::Done);
    }
}
