//! Read-only queries of the log for the admin API: message listings and time
//! lookups. Nothing here writes.

use serde::Serialize;

use super::Log;
use crate::model::{MessageId, Seq, SourceName};
use crate::store::{codec, StoreError};

/// Most messages one listing examines, so a filter that matches nothing
/// cannot turn one request into a full scan.
const SCAN_CAP: usize = 100_000;
/// A long scan lets go of the segment directory after this many messages
/// and walks on from where it was: the appender needs the directory to open
/// a segment, and waiting for a whole scan would hold back every ack.
const WALK_CHUNK: usize = 4096;

/// Seqs one step of a backwards listing walks forward through.
const BACK_CHUNK: u64 = 512;

/// One page of a newest-first listing ([`Log::list_messages_back`]).
#[derive(Debug, Default)]
pub struct BackPage {
    /// Newest first.
    pub found: Vec<MessageMeta>,
    /// The `before` of the next, older page; `None` when the range is done.
    pub next_before: Option<Seq>,
    /// How many messages were looked at.
    pub examined: usize,
}

/// What the admin API shows of a message without its body.
#[derive(Debug, Clone, Serialize)]
pub struct MessageMeta {
    pub seq: u64,
    pub id: MessageId,
    pub source: SourceName,
    pub received_at_ms: u64,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    pub query: Option<String>,
    pub idempotency_key: Option<String>,
    pub body_bytes: usize,
}

impl MessageMeta {
    /// What is shown of message `seq` without its body and headers.
    pub fn of(seq: Seq, m: &codec::Message) -> MessageMeta {
        MessageMeta {
            seq: seq.0,
            id: m.id.clone(),
            source: m.source.clone(),
            received_at_ms: m.received_at_ms,
            event_type: m.event_type.clone(),
            content_type: m.content_type.clone(),
            query: m.query.clone(),
            idempotency_key: m.idempotency_key.clone(),
            body_bytes: m.body.len(),
        }
    }
}

/// A test on a whole (decoded) message, for [`Log::list_messages_back`].
pub type WholeOk<'a> = &'a mut dyn FnMut(Seq, &codec::Message) -> Result<bool, StoreError>;

/// A message a chunk of [`Log::list_messages_back`] found: already decoded
/// (a whole-message test needed it) or only its seq.
enum Found {
    Meta(MessageMeta),
    Seq(Seq),
}

impl Log {
    /// The first message at or after `from` (its seq and head).
    fn head_at_or_after(&self, from: Seq) -> Result<Option<(Seq, codec::MessageHead)>, StoreError> {
        match self.walk(from)?.next()? {
            Some(entry) => Ok(Some((entry.seq, entry.head()?))),
            None => Ok(None),
        }
    }

    /// Messages after `after`, ascending, optionally of one source and one
    /// event type only. Blocking.
    pub fn list_messages(
        &self,
        source: Option<&SourceName>,
        event_type: Option<&str>,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<MessageMeta>, StoreError> {
        let mut out = Vec::new();
        let mut walk = self.walk(after.next())?;
        let mut last = after;
        for i in 0..SCAN_CAP {
            if out.len() >= limit {
                break;
            }
            if i > 0 && i % WALK_CHUNK == 0 {
                drop(walk);
                walk = self.walk(last.next())?;
            }
            let Some(entry) = walk.next()? else {
                break;
            };
            last = entry.seq;
            if source.is_some() || event_type.is_some() {
                let head = entry.head()?;
                if source.is_some_and(|s| *s != head.source)
                    || event_type.is_some_and(|t| head.event_type.as_deref() != Some(t))
                {
                    continue;
                }
            }
            let m = walk.message(&entry)?;
            out.push(MessageMeta::of(entry.seq, &m));
        }
        Ok(out)
    }

    /// Newest first: messages below `before` and at or above `floor` that
    /// pass `head_ok` (on the head alone, cheap) and then `whole_ok`, if
    /// given (on the decoded message), at most `limit` of them, examining
    /// about `cap` messages at most (a chunk more). The log only walks
    /// forward, so this walks it in chunks of [`BACK_CHUNK`] seqs, each from
    /// further down. Without `whole_ok` only the messages shown are decoded.
    /// Blocking.
    pub fn list_messages_back(
        &self,
        (floor, before): (Seq, Seq),
        (limit, cap): (usize, usize),
        head_ok: impl Fn(&codec::MessageHead) -> bool,
        mut whole_ok: Option<WholeOk<'_>>,
    ) -> Result<BackPage, StoreError> {
        let mut page = BackPage::default();
        let Some(first) = self.first_seq()? else {
            return Ok(page);
        };
        let floor = floor.max(first);
        let mut hi = before;
        while hi > floor && page.examined < cap {
            let lo = Seq(hi.0.saturating_sub(BACK_CHUNK).max(floor.0));
            let mut chunk = Vec::new();
            let mut walk = self.walk(lo)?;
            while let Some(entry) = walk.next()? {
                if entry.seq >= hi {
                    break;
                }
                page.examined += 1;
                if !head_ok(&entry.head()?) {
                    continue;
                }
                match whole_ok.as_mut() {
                    Some(ok) => {
                        let m = walk.message(&entry)?;
                        if ok(entry.seq, &m)? {
                            chunk.push(Found::Meta(MessageMeta::of(entry.seq, &m)));
                        }
                    }
                    None => chunk.push(Found::Seq(entry.seq)),
                }
            }
            for found in chunk.into_iter().rev() {
                if page.found.len() == limit {
                    // The next page goes on below the last one shown.
                    page.next_before = page.found.last().map(|m| Seq(m.seq));
                    return Ok(page);
                }
                let meta = match found {
                    Found::Meta(meta) => meta,
                    Found::Seq(seq) => match self.message(seq)? {
                        Some(m) => MessageMeta::of(seq, &m),
                        None => continue,
                    },
                };
                page.found.push(meta);
            }
            hi = lo;
        }
        page.next_before = (hi > floor).then_some(hi);
        Ok(page)
    }

    /// How many messages in [`from`, `to`] come from a source `routes`
    /// accepts, reading only their heads; at most `cap` messages are
    /// examined, and `false` says the count stopped there. Blocking.
    pub fn count_routed(
        &self,
        from: Seq,
        to: Seq,
        routes: impl Fn(&SourceName) -> bool,
        cap: usize,
    ) -> Result<(u64, bool), StoreError> {
        let (count, complete, _) = self.count_routed_from(from, to, routes, cap)?;
        Ok((count, complete))
    }

    /// [`Log::count_routed`], and when the first message counted was
    /// received (read from its head).
    pub fn count_routed_from(
        &self,
        from: Seq,
        to: Seq,
        routes: impl Fn(&SourceName) -> bool,
        cap: usize,
    ) -> Result<(u64, bool, Option<u64>), StoreError> {
        let mut count = 0;
        let mut first = None;
        if from > to {
            return Ok((0, true, None));
        }
        let mut walk = self.walk(from)?;
        let mut last = from;
        for i in 0..cap {
            if i > 0 && i % WALK_CHUNK == 0 {
                drop(walk);
                walk = self.walk(last.next())?;
            }
            let Some(entry) = walk.next()? else {
                return Ok((count, true, first));
            };
            last = entry.seq;
            if entry.seq > to {
                return Ok((count, true, first));
            }
            let head = entry.head()?;
            if routes(&head.source) {
                count += 1;
                first.get_or_insert(head.received_at_ms);
            }
        }
        // The cap is reached: done only if nothing else is in the range.
        match walk.next()? {
            Some(entry) if entry.seq <= to => Ok((count, false, first)),
            _ => Ok((count, true, first)),
        }
    }

    /// The first seq received at or after `at_ms` (one past the head if none),
    /// by binary search over seqs: O(log n) reads, no scan. Blocking.
    pub fn seq_at_time(&self, at_ms: u64) -> Result<Seq, StoreError> {
        let Some(first) = self.first_seq()? else {
            return Ok(self.last_seq()?.next());
        };
        let (mut lo, mut hi) = (first.0, self.last_seq()?.0.saturating_add(1));
        // Invariant: every message below `lo` is older than `at_ms`; `hi` is a candidate.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.head_at_or_after(Seq(mid))? {
                Some((seq, head)) if head.received_at_ms >= at_ms => hi = mid.min(seq.0),
                Some((seq, _)) => lo = seq.0 + 1,
                None => hi = mid,
            }
        }
        Ok(Seq(lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{message, open, put};

    #[test]
    fn seq_at_time_finds_the_first_message_at_or_after() {
        let (_dir, store) = open();
        let log = store.log();
        assert_eq!(log.seq_at_time(5).unwrap(), Seq(1));
        for seq in 3..=40 {
            put(&store, seq, &message("a", seq * 100, vec![7; 10]));
        }
        assert_eq!(log.seq_at_time(0).unwrap(), Seq(3));
        assert_eq!(log.seq_at_time(1000).unwrap(), Seq(10));
        assert_eq!(log.seq_at_time(1001).unwrap(), Seq(11));
        assert_eq!(log.seq_at_time(4000).unwrap(), Seq(40));
        assert_eq!(log.seq_at_time(999_999).unwrap(), Seq(41));
    }

    #[test]
    fn listing_filters_by_source_and_pages_by_seq() {
        let (_dir, store) = open();
        for seq in 1..=10 {
            let source = if seq % 2 == 0 { "b" } else { "a" };
            put(&store, seq, &message(source, seq, vec![7; 10]));
        }
        let b: SourceName = "b".parse().unwrap();
        let page = store
            .log()
            .list_messages(Some(&b), None, Seq(4), 2)
            .unwrap();
        let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![6, 8]);
        assert_eq!(page[0].body_bytes, 10);
        assert_eq!(
            store
                .log()
                .list_messages(None, None, Seq(0), 100)
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn backwards_listing_pages_newest_first_within_a_range_and_a_cap() {
        let (_dir, store) = open();
        for seq in 1..=2000 {
            let source = if seq % 2 == 0 { "b" } else { "a" };
            put(&store, seq, &message(source, seq, vec![7; 10]));
        }
        let log = store.log();
        let is_b = |h: &codec::MessageHead| h.source.as_str() == "b";
        let p = log
            .list_messages_back((Seq(0), Seq(2001)), (3, 10_000), is_b, None)
            .unwrap();
        let seqs: Vec<u64> = p.found.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![2000, 1998, 1996]);
        assert_eq!(p.next_before, Some(Seq(1996)));
        let p = log
            .list_messages_back((Seq(1990), Seq(1996)), (10, 10_000), is_b, None)
            .unwrap();
        let seqs: Vec<u64> = p.found.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1994, 1992, 1990]);
        assert_eq!(p.next_before, None, "the floor ends the range");
        // Nothing matches: the cap stops the walk and says where to go on.
        let p = log
            .list_messages_back((Seq(0), Seq(2001)), (10, 600), |_| false, None)
            .unwrap();
        assert!(p.found.is_empty());
        assert!(p.examined >= 600 && p.examined < 600 + BACK_CHUNK as usize);
        let next = p.next_before.unwrap();
        assert_eq!(next.0, 2001 - p.examined as u64);
        let mut all = |_: Seq, _: &codec::Message| Ok(true);
        let p = log
            .list_messages_back((Seq(0), Seq(2001)), (3, 10_000), is_b, Some(&mut all))
            .unwrap();
        let seqs: Vec<u64> = p.found.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            vec![2000, 1998, 1996],
            "the same with a whole-message test"
        );
        let mut body_has_8 = |_: Seq, m: &codec::Message| Ok(m.body.contains(&8));
        let p = log
            .list_messages_back(
                (Seq(0), Seq(2001)),
                (10, 10_000),
                |_| true,
                Some(&mut body_has_8),
            )
            .unwrap();
        assert!(p.found.is_empty() && p.next_before.is_none());
        assert_eq!(p.examined, 2000);
    }

    #[test]
    fn counting_reads_heads_in_a_closed_range_up_to_a_cap() {
        let (_dir, store) = open();
        for seq in 1..=10 {
            let source = if seq % 2 == 0 { "b" } else { "a" };
            put(&store, seq, &message(source, seq, vec![7; 5000]));
        }
        let log = store.log();
        let is_b = |s: &SourceName| s.as_str() == "b";
        assert_eq!(
            log.count_routed(Seq(3), Seq(8), is_b, 1000).unwrap(),
            (3, true)
        );
        // The first one counted, by its head: when the oldest pending came.
        assert_eq!(
            log.count_routed_from(Seq(3), Seq(8), is_b, 1000).unwrap(),
            (3, true, Some(4))
        );
        assert_eq!(
            log.count_routed(Seq(1), Seq(10), |_| true, 1000).unwrap(),
            (10, true)
        );
        assert_eq!(
            log.count_routed(Seq(9), Seq(3), |_| true, 1000).unwrap(),
            (0, true)
        );
        assert_eq!(
            log.count_routed(Seq(1), Seq(10), |_| true, 5).unwrap(),
            (5, false)
        );
        assert_eq!(
            log.count_routed(Seq(1), Seq(10), |_| true, 10).unwrap(),
            (10, true)
        );
    }
}
