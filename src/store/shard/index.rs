//! The in-memory index of a shard store, built from the sidecars: which
//! record holds each live key, in write order.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::store::shard::layout::{IdxRecord, DEL};

/// Where a committed record lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Position of the shard in the manifest's list.
    pub shard: usize,
    /// Offset of the record in the shard.
    pub offset: u64,
    /// Length of the record.
    pub len: u64,
    /// crc32c of the record's bytes.
    pub crc: u32,
}

/// One put, in write order; `live` is false once overwritten or deleted.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub key: Arc<[u8]>,
    pub loc: Loc,
    pub live: bool,
}

/// A live sample as an order yields it: its key (borrowed from the key
/// table's map or the snapshot's index) and its record.
#[derive(Clone, Debug)]
pub(crate) struct EntryRef<'a> {
    pub key: &'a [u8],
    pub loc: Loc,
}

impl<'a> EntryRef<'a> {
    /// The entry of an index.
    pub fn of(e: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            key: &e.key,
            loc: e.loc.clone(),
        }
    }
}

/// Live keys and every put in write order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    /// foldhash: keys are hashed at every open, and SipHash was a third of
    /// the time of opening a large store; its seed is random per process.
    pub by_key: HashMap<Arc<[u8]>, usize, RandomState>,
    pub entries: Vec<Entry>,
    /// Bytes of live records.
    pub live_bytes: u64,
}

impl Index {
    /// Applies a sidecar record of shard position `shard`.
    pub fn apply(&mut self, shard: usize, r: IdxRecord) {
        let old = self.by_key.get(&*r.key).copied();
        if let Some(i) = old {
            let e = &mut self.entries[i];
            e.live = false;
            self.live_bytes -= e.loc.len;
        }
        if r.kind == DEL {
            self.by_key.remove(&*r.key);
            return;
        }
        let key: Arc<[u8]> = match old {
            // Reuse the key's allocation.
            Some(i) => self.entries[i].key.clone(),
            None => r.key,
        };
        self.entries.push(Entry {
            key: key.clone(),
            loc: Loc {
                shard,
                offset: r.offset,
                len: r.len,
                crc: r.crc,
            },
            live: true,
        });
        self.live_bytes += r.len;
        self.by_key.insert(key, self.entries.len() - 1);
    }

    /// Makes room for about `n` more records.
    pub fn reserve(&mut self, n: usize) {
        self.by_key.reserve(n);
        self.entries.reserve(n);
    }

    /// Number of live samples.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The live entry for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.by_key.get(key).map(|&i| &self.entries[i])
    }

    /// Live entries in write order.
    pub fn live(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter().filter(|e| e.live)
    }

    /// Positions of live entries, in write order.
    pub fn live_positions(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.by_key.len());
        out.extend(
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.live)
                .map(|(i, _)| i as u32),
        );
        out
    }

    /// Positions of live entries, sorted by key.
    pub fn sorted(&self) -> Vec<u32> {
        let mut order: Vec<u32> = self.by_key.values().map(|&i| i as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            self.entries[a as usize]
                .key
                .cmp(&self.entries[b as usize].key)
        });
        order
    }
}
