//! Netascii (RFC 1350 via RFC 764): line ends go out as CR LF and a bare CR as CR NUL.
//!
//! Converted block by block from the catalog's shared bytes: a transfer holds a cursor and
//! one block's buffer, never a converted copy of the file (a copy per transfer let a few
//! hundred netascii requests for a large file take all memory).

use std::ops::Range;

use bytes::Bytes;

/// A position in the converted stream: the next source byte, and the second byte of an
/// expansion whose CR already went out in the previous block.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    src: usize,
    pending: Option<u8>,
}

fn special(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// Move `cur` forward by up to `n` converted bytes, appending them to `out` when given.
/// Returns how many converted bytes it moved (fewer than `n` only at the end).
fn advance(src: &[u8], cur: &mut Cursor, n: usize, mut out: Option<&mut Vec<u8>>) -> usize {
    let mut left = n;
    if left > 0
        && let Some(b) = cur.pending.take()
    {
        if let Some(o) = out.as_deref_mut() {
            o.push(b);
        }
        left -= 1;
    }
    while left > 0 && cur.src < src.len() {
        let run = &src[cur.src..src.len().min(cur.src + left)];
        let plain = run.iter().position(|&b| special(b)).unwrap_or(run.len());
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(&run[..plain]);
        }
        cur.src += plain;
        left -= plain;
        if plain == run.len() {
            // The budget or the source ran out.
            continue;
        }
        let second = if src[cur.src] == b'\n' { b'\n' } else { 0 };
        cur.src += 1;
        if let Some(o) = out.as_deref_mut() {
            o.push(b'\r');
        }
        left -= 1;
        if left == 0 {
            cur.pending = Some(second);
            break;
        }
        if let Some(o) = out.as_deref_mut() {
            o.push(second);
        }
        left -= 1;
    }
    n - left
}

/// The netascii form of one published body, produced a block at a time.
///
/// Blocks are asked for in order, and a rewind (retransmission) goes back at most to the
/// last [`forget_before`](Stream::forget_before) mark, so every byte is scanned a bounded
/// number of times: once to be acknowledged, plus once per resend of its window.
#[derive(Debug)]
pub struct Stream {
    src: Bytes,
    len: u64,
    /// Where `cur` stands, in converted bytes.
    at: u64,
    cur: Cursor,
    /// A point at or before every block that may still be asked for.
    mark_at: u64,
    mark: Cursor,
    buf: Vec<u8>,
}

impl Stream {
    pub fn new(src: Bytes) -> Stream {
        let extra = src.iter().filter(|&&b| special(b)).count() as u64;
        Stream {
            len: src.len() as u64 + extra,
            src,
            at: 0,
            cur: Cursor::default(),
            mark_at: 0,
            mark: Cursor::default(),
            buf: Vec::new(),
        }
    }

    /// Length of the converted stream (what tsize reports).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Converted bytes `range` (one block).
    pub fn block(&mut self, range: Range<usize>) -> &[u8] {
        let start = range.start as u64;
        if start < self.at {
            // A resend: go back to the mark (or, had the caller broken its promise, to the
            // start: slower, never wrong).
            if start >= self.mark_at {
                (self.at, self.cur) = (self.mark_at, self.mark);
            } else {
                (self.at, self.cur) = (0, Cursor::default());
            }
        }
        let skip = (start - self.at) as usize;
        self.at += advance(&self.src, &mut self.cur, skip, None) as u64;
        self.buf.clear();
        // One block's worth, allocated once for the whole transfer.
        self.buf.reserve_exact(range.len());
        self.at += advance(&self.src, &mut self.cur, range.len(), Some(&mut self.buf)) as u64;
        &self.buf
    }

    /// Nothing before converted offset `off` will be asked for again (it is acknowledged).
    pub fn forget_before(&mut self, off: u64) {
        if off <= self.mark_at {
            return;
        }
        if off >= self.at && self.at >= self.mark_at {
            // Usually the cursor has already passed the acknowledged blocks' start... or
            // stands exactly there: start from the nearer of the two.
            (self.mark_at, self.mark) = (self.at, self.cur);
        }
        let step = (off - self.mark_at) as usize;
        self.mark_at += advance(&self.src, &mut self.mark, step, None) as u64;
    }

    /// Heap bytes this stream holds beside the shared body (its block buffer).
    #[cfg(test)]
    fn own_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::{Ack, Window};
    use super::*;
    use proptest::prelude::*;

    /// The whole conversion at once: the reference the streamed blocks must equal.
    fn encode(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                b => out.push(b),
            }
        }
        out
    }

    fn streamed(body: &[u8], blksize: usize) -> Vec<u8> {
        let mut s = Stream::new(Bytes::copy_from_slice(body));
        let len = s.len() as usize;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + blksize).min(len);
            out.extend_from_slice(s.block(start..end));
            if end == len {
                break;
            }
            start = end;
        }
        out
    }

    #[test]
    fn converts_line_ends_and_bare_cr() {
        assert_eq!(encode(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
        for blksize in 1..8 {
            assert_eq!(streamed(b"a\nb\rc\r\n", blksize), b"a\r\nb\r\0c\r\0\r\n");
        }
        assert_eq!(Stream::new(Bytes::from_static(b"a\nb\rc\r\n")).len(), 11);
    }

    #[test]
    fn a_transfer_holds_no_copy_of_the_file() {
        // 4 MiB, a line end every 40 bytes and a bare CR every 1000: 4% larger converted.
        let body: Bytes = (0..4usize << 20)
            .map(|i| match i {
                i if i % 1000 == 999 => b'\r',
                i if i % 40 == 39 => b'\n',
                i => b'a' + (i % 26) as u8,
            })
            .collect::<Vec<u8>>()
            .into();
        let reference = encode(&body);
        let blksize = 1468;
        let mut s = Stream::new(body.clone());
        assert_eq!(s.len(), reference.len() as u64);
        let mut w = Window::new(s.len(), blksize as u16, 16, false);
        let mut most = 0;
        let mut acks = 0u64;
        loop {
            let due = w.due();
            for n in due.clone() {
                let (_, r) = w.block(n);
                assert_eq!(s.block(r.clone()), &reference[r]);
                most = most.max(s.own_bytes());
            }
            w.sent_through(due.end);
            // Every third round loses the window's second half once (a partial ACK).
            acks += 1;
            let ack = if acks.is_multiple_of(3) && due.end - due.start > 8 {
                due.start + 7
            } else {
                due.end - 1
            };
            match w.on_ack((ack & 0xffff) as u16) {
                Ack::Done => break,
                Ack::Progress => s.forget_before(w.acknowledged_bytes()),
                Ack::Ignored => panic!("ACK {ack} ignored"),
            }
        }
        // The stream reads the catalog's own bytes and holds one block of its own.
        assert_eq!(s.src.as_ptr(), body.as_ptr());
        assert!(most <= blksize, "a transfer held {most} bytes of its own");
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        // Mostly line ends, so every block boundary falls inside an expansion somewhere.
        prop::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(0u8), Just(b'x')],
            0..600,
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send,
        Ack(u16),
        Rewind,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Send),
            3 => (0u16..40).prop_map(Op::Ack),
            1 => Just(Op::Rewind),
        ]
    }

    proptest! {
        #[test]
        fn streamed_blocks_equal_the_whole_conversion(b in body(), blksize in 1usize..70) {
            prop_assert_eq!(streamed(&b, blksize), encode(&b));
        }

        #[test]
        fn any_send_ack_rewind_order_gives_the_reference_bytes(
            b in body(),
            blksize in 1u16..40,
            window in 1u16..6,
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let reference = encode(&b);
            let mut s = Stream::new(Bytes::from(b));
            let mut w = Window::new(s.len(), blksize, window, false);
            for o in ops {
                match o {
                    Op::Send => {
                        let due = w.due();
                        for n in due.clone() {
                            let (_, r) = w.block(n);
                            prop_assert_eq!(s.block(r.clone()), &reference[r]);
                        }
                        w.sent_through(due.end);
                    }
                    Op::Ack(k) => match w.on_ack(k) {
                        Ack::Done => break,
                        Ack::Progress => s.forget_before(w.acknowledged_bytes()),
                        Ack::Ignored => {}
                    },
                    Op::Rewind => {
                        w.rewind();
                    }
                }
            }
        }
    }
}
