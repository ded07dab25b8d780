//! The key rules both backends follow: how long a key may be, a set of
//! keys taken once each, and the seeded order of a shuffled epoch. The
//! serve protocol checks request keys with the same rule.

use crate::store::error::{Result, StoreError};

/// The longest key of either backend: LMDB's limit (its default build),
/// which the shard store keeps so that a store moves between backends.
pub const MAX_KEY_LEN: usize = 511;

/// Checks that `key` is 1 to `max` bytes long: [`StoreError::BadKey`]
/// otherwise.
pub fn check_key_len(key: &[u8], max: usize) -> Result<()> {
    if key.is_empty() || key.len() > max {
        return Err(StoreError::BadKey {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

/// Checks that `key` can be stored: 1 to [`MAX_KEY_LEN`] bytes.
pub fn check_key(key: &[u8]) -> Result<()> {
    check_key_len(key, MAX_KEY_LEN)
}

/// The keys, checked, each once (a key named twice is removed once).
pub(crate) fn distinct<K: AsRef<[u8]>>(keys: &[K]) -> Result<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::with_capacity(keys.len());
    for k in keys {
        check_key(k.as_ref())?;
        out.push(k.as_ref());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Shuffles `items` in place with a permutation fixed by `seed`
/// (Fisher-Yates over splitmix64): the order of a shuffled epoch, the
/// same for both backends.
pub(crate) fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
