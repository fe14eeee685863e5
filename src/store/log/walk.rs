//! Reading the log in seq order across frames, parts and segments.
//!
//! A [`Walk`] holds the segment directory for reading (so retention cannot
//! drop a tree under it), finds the value holding its first seq with one
//! descent of that segment's tree, and then follows sled's iterator from
//! segment to segment. A message in a frame comes back as a slice of the
//! frame's `IVec` (no copy); a message stored in parts comes back with its
//! first part, and [`Walk::rest`] reads the others.

use std::ops::Bound;
use std::sync::RwLockReadGuard;

use super::segments::{Dir, SegKey};
use super::{key, parse_key};
use crate::model::Seq;
use crate::store::codec::{self, CodecError, FrameEntries, LogValue, Message, MessageHead};
use crate::store::StoreError;

/// One message as found in the log.
pub struct Entry {
    pub seq: Seq,
    /// Its whole record (in a frame) or the first part's share of it.
    pub first: sled::IVec,
    /// How many values hold it: 1 in a frame, its part count otherwise.
    pub values: u32,
}

impl Entry {
    /// The message's head, from its first bytes.
    pub fn head(&self) -> Result<MessageHead, CodecError> {
        codec::decode_head(&self.first)
    }

    /// Bytes of its record in its first value.
    pub fn len(&self) -> usize {
        self.first.len()
    }
}

/// A walk over the log's messages from a seq on.
pub struct Walk<'a> {
    dir: RwLockReadGuard<'a, Dir>,
    /// The segment being read.
    seg: Option<SegKey>,
    iter: Option<sled::Iter>,
    frame: Option<(sled::IVec, FrameEntries)>,
    from: Seq,
    /// The last message returned was stored in parts and its later parts
    /// were not read ([`Walk::record`]): the next step seeks past them
    /// instead of reading them.
    unread_parts: Option<Seq>,
}

impl<'a> Walk<'a> {
    /// A walk yielding the messages at or after `from`. One descent.
    pub fn new(dir: RwLockReadGuard<'a, Dir>, from: Seq) -> Result<Walk<'a>, StoreError> {
        let start = key(from, 0);
        let seg = match dir.range(..=start).next_back() {
            Some((k, _)) => Some(*k),
            None => dir.keys().next().copied(),
        };
        let mut walk = Walk {
            dir,
            seg,
            iter: None,
            frame: None,
            from,
            unread_parts: None,
        };
        let Some(tree) = seg.and_then(|s| walk.dir.get(&s)) else {
            return Ok(walk);
        };
        // The value holding `from`, if stored, is the last at or before (from, 0).
        match tree.range(..=start).next_back().transpose()? {
            Some((k, v)) => {
                walk.iter =
                    Some(tree.range::<&[u8], _>((Bound::Excluded(&k[..]), Bound::Unbounded)));
                if let LogValue::Frame(entries) = codec::decode_log_value(&v)? {
                    walk.frame = Some((v, entries));
                } else if parse_key(&k).is_some_and(|(s, part)| s == from && part == 0) {
                    walk.iter = Some(tree.range(start..));
                }
            }
            None => walk.iter = Some(tree.range(start..)),
        }
        Ok(walk)
    }

    /// The next message, `None` at the end of the log.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry>, StoreError> {
        if let Some(seq) = self.unread_parts.take() {
            // One descent instead of reading every part of a large message
            // nobody asked for (a scan of heads, a destination it does not
            // route to).
            self.seek(seq.next())?;
        }
        loop {
            if let Some((v, entries)) = &mut self.frame {
                match entries.next(v) {
                    Some(Ok((seq, range))) if seq >= self.from => {
                        let first = v.subslice(range.start, range.len());
                        return Ok(Some(Entry {
                            seq,
                            first,
                            values: 1,
                        }));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        self.frame = None;
                        return Err(e.into());
                    }
                    None => self.frame = None,
                }
            }
            let Some((k, v)) = self.next_value()? else {
                return Ok(None);
            };
            let (seq, part) = parse_key(&k)
                .ok_or_else(|| CodecError::Corrupt(format!("log key of {} bytes", k.len())))?;
            match codec::decode_log_value(&v)? {
                LogValue::Frame(entries) => self.frame = Some((v, entries)),
                LogValue::Part {
                    index: 0,
                    count,
                    payload,
                } if part == 0 && seq >= self.from => {
                    let first = v.subslice(payload.start, payload.len());
                    if count > 1 {
                        self.unread_parts = Some(seq);
                    }
                    return Ok(Some(Entry {
                        seq,
                        first,
                        values: count,
                    }));
                }
                // A later part of a message already passed (or below `from`).
                LogValue::Part { .. } => {}
            }
        }
    }

    /// The whole record of `entry`, the message [`Walk::next`] just
    /// returned: its first part's bytes and every following part.
    pub fn record(&mut self, entry: &Entry) -> Result<Vec<u8>, StoreError> {
        // The parts are read here, in order, from where `next` stopped.
        self.unread_parts = None;
        // The part count comes from disk: grown as parts arrive, never
        // reserved from it (a corrupt count must not ask for terabytes).
        let mut bytes = Vec::with_capacity(entry.first.len());
        bytes.extend_from_slice(&entry.first);
        for i in 1..entry.values {
            let Some((k, v)) = self.next_value()? else {
                return Err(StoreError::Truncated(entry.seq));
            };
            match (parse_key(&k), codec::decode_log_value(&v)) {
                (
                    Some((seq, part)),
                    Ok(LogValue::Part {
                        index,
                        count,
                        payload,
                    }),
                ) if seq == entry.seq && part == i && index == i && count == entry.values => {
                    bytes.extend_from_slice(&v[payload]);
                }
                _ => return Err(StoreError::Truncated(entry.seq)),
            }
        }
        Ok(bytes)
    }

    /// The whole message of `entry` (see [`Walk::record`]).
    pub fn message(&mut self, entry: &Entry) -> Result<Message, StoreError> {
        if entry.values == 1 {
            return Ok(codec::decode_message(&entry.first)?);
        }
        Ok(codec::decode_message(&self.record(entry)?)?)
    }

    /// Moves to the first value at or after `seq`'s first key, with one
    /// descent of the segment holding it.
    fn seek(&mut self, seq: Seq) -> Result<(), StoreError> {
        let start = key(seq, 0);
        self.frame = None;
        self.seg = match self.dir.range(..=start).next_back() {
            Some((k, _)) => Some(*k),
            None => self.dir.keys().next().copied(),
        };
        self.iter = self
            .seg
            .and_then(|s| self.dir.get(&s))
            .map(|tree| tree.range(start..));
        Ok(())
    }

    fn next_value(&mut self) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        loop {
            if let Some(kv) = self.iter.as_mut().and_then(Iterator::next) {
                return Ok(Some(kv?));
            }
            let Some(seg) = self.seg else {
                return Ok(None);
            };
            let after = (Bound::Excluded(seg), Bound::Unbounded);
            let Some((next, tree)) = self.dir.range(after).next() else {
                self.iter = None;
                return Ok(None);
            };
            self.seg = Some(*next);
            self.iter = Some(tree.iter());
        }
    }
}
