//! Cache prefetch hints for the decoder.
//!
//! Checking a buffer walks its chunks, and each chunk's position is read
//! from the one before: out of cache, every hop is a cache miss that waits
//! for the last. A prefetch of the lines a walk will reach lets those
//! misses overlap instead. A prefetch is only a hint: it reads nothing the
//! program can see, never faults, and is a no-op where the target has no
//! such instruction.

/// Bytes of a cache line (64 on every x86-64 and most ARM cores).
const LINE: usize = 64;

/// Bytes at the end of a buffer prefetched together with its start: where
/// the chunks of small trailing tensors (labels, logits) sit behind a large
/// one, e.g. the last 320 bytes of the standard image + logits + label
/// sample.
pub(crate) const TAIL: usize = 512;

/// Bytes at the start of a buffer prefetched: the first header chunk and
/// the prefix of the data chunk after it.
const HEAD: usize = 2 * LINE;

/// Asks for the cache line holding `buf[at]` to be loaded, if `at` is in
/// `buf`.
#[inline(always)]
fn prefetch(buf: &[u8], at: usize) {
    if let Some(b) = buf.get(at) {
        line(b);
    }
}

/// Prefetches the lines of `buf[start..end]` (clamped to `buf`).
#[inline(always)]
pub(crate) fn range(buf: &[u8], start: usize, end: usize) {
    let end = end.min(buf.len());
    let mut at = start;
    while at < end {
        prefetch(buf, at);
        at += LINE;
    }
    // The line of the last byte, when `start` was not line aligned.
    if start < end {
        prefetch(buf, end - 1);
    }
}

/// Prefetches the start and the end of `buf` together: the lines a check
/// of a buffer whose last tensors are small reaches first, so that their
/// misses overlap instead of following each other.
#[inline]
pub(crate) fn ends(buf: &[u8]) {
    let tail = buf.len().saturating_sub(TAIL);
    if tail <= HEAD {
        range(buf, 0, buf.len());
    } else {
        range(buf, 0, HEAD);
        range(buf, tail, buf.len());
    }
}

/// Prefetches the lines of `buf[start..end]`: a run of bytes whose
/// position is known before it is read.
#[inline]
pub(crate) fn span(buf: &[u8], start: usize, end: usize) {
    range(buf, start, end);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn line(b: &u8) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has (it is
    // part of the x86_64 baseline the standard library itself assumes).
    // The instruction is a hint: it changes no memory and no register the
    // program reads, and never faults, whatever the address; here the
    // address is that of a live `&u8` besides.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((b as *const u8).cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn line(_b: &u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_any_part_of_any_buffer_is_harmless() {
        // Hints only: what is checked is that no length or offset makes
        // them index out of bounds, and that they change nothing.
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129, 640, 641, 5000] {
            let buf: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let before = buf.clone();
            ends(&buf);
            prefetch(&buf, len);
            prefetch(&buf, usize::MAX);
            range(&buf, len.saturating_sub(3), len + 100);
            assert_eq!(buf, before);
        }
    }
}
