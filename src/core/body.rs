//! A request body gathered under a size bound: the one rule the proxy (registration bodies)
//! and the admin listener (API bodies) read with. Each adapter owns only its loop over its
//! session's chunks, its deadline and its error type.
//!
//! Past `limit` the body is refused. A reader may keep *draining* — reading and dropping — up
//! to a larger bound, so that a client still sending gets to read the 413 instead of a reset
//! connection, and the connection stays usable (the admin listener does). The proxy does not:
//! a registration body past its limit ends the connection, so its unread rest is never read
//! as the next request.

/// The body is larger than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

#[derive(Debug)]
pub struct BoundedBody {
    buf: Vec<u8>,
    seen: usize,
    limit: usize,
    drain_limit: usize,
}

impl BoundedBody {
    /// At most `limit` bytes; reading stops at the first byte past it.
    pub fn new(limit: usize) -> BoundedBody {
        BoundedBody::draining(limit, limit)
    }

    /// At most `limit` bytes kept; a larger body is read and dropped up to `drain_limit`
    /// bytes (never less than `limit`) before reading stops.
    pub fn draining(limit: usize, drain_limit: usize) -> BoundedBody {
        BoundedBody { buf: Vec::new(), seen: 0, limit, drain_limit: drain_limit.max(limit) }
    }

    /// Take the next chunk. `Err`: stop reading — the body is too large and the rest of it is
    /// left unread (the connection cannot be reused).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        self.seen = self.seen.saturating_add(chunk.len());
        if self.seen > self.drain_limit {
            return Err(TooLarge);
        }
        if self.seen <= self.limit {
            self.buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// The body, read to its end: its bytes, or `TooLarge` when it was drained past the limit
    /// (then the connection can be reused).
    pub fn finish(self) -> Result<Vec<u8>, TooLarge> {
        match self.seen > self.limit {
            true => Err(TooLarge),
            false => Ok(self.buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_within_its_limit_is_kept_whole() {
        let mut b = BoundedBody::new(5);
        assert_eq!(b.push(b"ab"), Ok(()));
        assert_eq!(b.push(b"cde"), Ok(()));
        assert_eq!(b.finish(), Ok(b"abcde".to_vec()));
        assert_eq!(BoundedBody::new(0).finish(), Ok(vec![]));
    }

    #[test]
    fn without_draining_reading_stops_at_the_first_byte_past_the_limit() {
        let mut b = BoundedBody::new(5);
        assert_eq!(b.push(b"abc"), Ok(()));
        assert_eq!(b.push(b"def"), Err(TooLarge));
    }

    #[test]
    fn draining_reads_and_drops_up_to_its_bound() {
        let mut b = BoundedBody::draining(4, 10);
        assert_eq!(b.push(b"abcdef"), Ok(()), "past the limit, within the drain bound");
        assert_eq!(b.push(b"ghij"), Ok(()));
        assert_eq!(b.finish(), Err(TooLarge), "drained whole, still refused");
        let mut b = BoundedBody::draining(4, 10);
        assert_eq!(b.push(b"abcdefghijk"), Err(TooLarge), "past the drain bound: stop");
    }

    #[test]
    fn the_drain_bound_never_cuts_a_body_within_its_limit() {
        let mut b = BoundedBody::draining(8, 2);
        assert_eq!(b.push(b"abcdefgh"), Ok(()));
        assert_eq!(b.finish(), Ok(b"abcdefgh".to_vec()));
    }

    #[test]
    fn a_huge_count_saturates_instead_of_wrapping() {
        let mut b = BoundedBody::draining(4, usize::MAX);
        b.seen = usize::MAX - 1;
        assert_eq!(b.push(b"abc"), Ok(()), "saturated at the drain bound");
        assert_eq!(b.finish(), Err(TooLarge));
    }
}
