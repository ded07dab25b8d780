//! The orders a snapshot with a key table reads its samples in, taken
//! off the table's rows and the records after it, without an index of
//! every key in memory: write order (scans, epoch plans: the `i`-th
//! sample in O(log changes)) and key order (a merge of the table's rows
//! with the records after it).

use std::iter::Peekable;

use crate::store::shard::index::{EntryRef, Index};
use crate::store::shard::table::{Damaged, Table};

/// The records after a key table, as the orders need them: O(those
/// records) in size, whatever the size of the table.
pub(crate) struct Delta {
    /// Positions in the table's write order of the rows whose keys
    /// records after it replace or delete, ascending.
    holes: Vec<u32>,
    /// Positions in the index of its live entries, in write order.
    pub live: Vec<u32>,
    /// The same, in key order.
    pub sorted: Vec<u32>,
}

impl Delta {
    /// The delta of `index` (the records after `table`) whose `shadow`
    /// keys the table holds and records after it replace; `order` is the
    /// table's [`write_order`](Table::write_order).
    pub fn build<'k>(
        table: &Table,
        order: &[u32],
        shadow: impl Iterator<Item = &'k [u8]>,
        index: &Index,
    ) -> std::result::Result<Delta, Damaged> {
        let mut holes = Vec::new();
        for key in shadow {
            let Some(loc) = table.get(key)? else {
                continue;
            };
            // `order` is sorted by (shard, offset): find the row there.
            let mut bad = None;
            let at = order.partition_point(|&r| match table.row(u64::from(r)) {
                Ok((_, Some(l))) => (l.shard, l.offset) < (loc.shard, loc.offset),
                Ok((_, None)) => false,
                Err(d) => {
                    bad = Some(d);
                    false
                }
            });
            if let Some(d) = bad {
                return Err(d);
            }
            let found = order
                .get(at)
                .map(|&r| table.row(u64::from(r)))
                .transpose()?
                .is_some_and(|(k, _)| k == key);
            if !found {
                return Err(Damaged(format!(
                    "the row of a replaced key ({}) is not among its live rows",
                    crate::error::escape(key)
                )));
            }
            holes.push(at as u32);
        }
        holes.sort_unstable();
        let live = index.live_positions();
        let sorted = index.sorted();
        Ok(Delta {
            holes,
            live,
            sorted,
        })
    }

    /// Rows of the table's write order that are still live.
    pub fn table_live(&self, order: &[u32]) -> u64 {
        (order.len() - self.holes.len()) as u64
    }

    /// The position in the table's write order of its `i`-th live row:
    /// `i` plus the holes at or before that position (the `j`-th hole,
    /// at `h`, lies at or before it exactly when `h - j <= i`, which
    /// grows with `j`).
    pub fn select(&self, i: u64) -> u64 {
        // Holes are distinct and ascending, so `h - j >= 0`.
        let (mut lo, mut hi) = (0usize, self.holes.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if u64::from(self.holes[mid]) - mid as u64 <= i {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        i + lo as u64
    }
}

/// The merge of two streams of entries in key order (no key in both).
pub(crate) struct Merge<'a, A: Iterator<Item = EntryRef<'a>>, B: Iterator<Item = EntryRef<'a>>> {
    pub a: Peekable<A>,
    pub b: Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = EntryRef<'a>>,
    B: Iterator<Item = EntryRef<'a>>,
{
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x.key <= y.key => self.a.next(),
            (Some(_), None) => self.a.next(),
            _ => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_by_walking(holes: &[u32], i: u64) -> u64 {
        let mut live = 0;
        for p in 0.. {
            if holes.contains(&(p as u32)) {
                continue;
            }
            if live == i {
                return p;
            }
            live += 1;
        }
        unreachable!()
    }

    #[test]
    fn select_skips_holes_as_a_walk_does() {
        for holes in [
            vec![],
            vec![0],
            vec![1],
            vec![0, 1, 2],
            vec![2, 3, 7],
            vec![0, 4, 5, 9, 10, 11],
        ] {
            let d = Delta {
                holes: holes.clone(),
                live: Vec::new(),
                sorted: Vec::new(),
            };
            for i in 0..12 {
                assert_eq!(d.select(i), select_by_walking(&holes, i), "{holes:?} {i}");
            }
        }
    }
}
