//! The key layout shared by the per-destination trees (`attempts`, `dead`):
//! `name ‖ 0x00 ‖ seq (u64 BE) [‖ …]`, so one destination's rows form one
//! range in seq order (names never contain NUL). Also the range walks
//! retention needs over such a tree. Owns no tree: `attempts.rs` and
//! `dead.rs` do, and decide how rows are deleted.

use crate::model::{DestinationName, Seq};
use crate::store::StoreError;

/// Prefix of a destination's rows: name ‖ 0x00.
pub fn prefix(dest: &DestinationName) -> Vec<u8> {
    let mut k = Vec::with_capacity(dest.as_str().len() + 13);
    k.extend_from_slice(dest.as_str().as_bytes());
    k.push(0);
    k
}

/// name ‖ 0x00 ‖ seq: a `dead` key, and the prefix of a seq's `attempts` keys.
pub fn seq_key(dest: &DestinationName, seq: Seq) -> Vec<u8> {
    let mut k = prefix(dest);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a key under `prefix` that has `tail` more bytes after its seq.
pub fn parse_seq(prefix: &[u8], k: &[u8], tail: usize) -> Option<Seq> {
    let rest = k.strip_prefix(prefix)?;
    let seq: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    (rest.len() == 8 + tail).then(|| Seq::from_be_bytes(seq))
}

/// Every distinct `name ‖ 0x00` prefix in `tree`, found by skipping from one
/// name to the next (one lookup per destination, not a scan of the rows).
pub fn prefixes(tree: &sled::Tree) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    while let Some(kv) = tree.range(from.as_slice()..).next() {
        let (k, _) = kv?;
        match k.iter().position(|&b| b == 0) {
            Some(end) => {
                out.push(k[..=end].to_vec());
                // `name ‖ 0x01` sorts after every `name ‖ 0x00 ‖ …` and before the next name.
                from = k[..end].to_vec();
                from.push(1);
            }
            None => {
                // Not a per-destination key; step over just this one.
                from = k.to_vec();
                from.push(0);
            }
        }
    }
    Ok(out)
}

/// Rows of one destination below a seq, found for deletion.
#[derive(Debug, Default)]
pub struct RowsBelow {
    pub keys: Vec<sled::IVec>,
    /// Bytes of those rows (keys and values).
    pub bytes: u64,
    /// Stopped at the limit; more may be due.
    pub more: bool,
}

/// Up to `max` rows under `prefix` whose seq is below `below`.
pub fn rows_below(
    tree: &sled::Tree,
    prefix: &[u8],
    below: Seq,
    max: usize,
) -> Result<RowsBelow, StoreError> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&below.to_be_bytes());
    let mut out = RowsBelow::default();
    for kv in tree.range(prefix..end.as_slice()) {
        if out.keys.len() >= max {
            out.more = true;
            break;
        }
        let (k, v) = kv?;
        out.bytes += (k.len() + v.len()) as u64;
        out.keys.push(k);
    }
    Ok(out)
}

impl RowsBelow {
    /// What deleting these rows did, `removed` of them having still been there.
    pub fn removed(&self, removed: u64) -> Removed {
        Removed {
            removed,
            bytes: self.bytes,
            more: self.more,
        }
    }
}

/// What one deletion step removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Removed {
    pub removed: u64,
    pub bytes: u64,
    /// Stopped at the limit; more may be due.
    pub more: bool,
}

/// A per-destination tree, as retention sees it.
pub trait PerDestination {
    /// Every destination with rows (as key prefixes), including ones no
    /// longer configured. Blocking.
    fn prefixes(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Deletes up to `max` rows under `prefix` whose seq is below `below`. Blocking.
    fn remove_below(&self, prefix: &[u8], below: Seq, max: usize) -> Result<Removed, StoreError>;
}
