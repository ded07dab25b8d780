//! Decoding a buffer: one checking pass, then zero-copy views on demand.

use std::fmt;

use crate::codec::chunk::{read_chunk, PREFIX};
use crate::codec::header::{parse_header, view_of_checked};
use crate::codec::prefetch;
use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// A checked tenbin buffer, borrowed: the list of tensors it holds.
///
/// [`Tensors::parse`] walks the buffer once and checks everything (magic,
/// lengths against what is there, padding, headers, shapes against data
/// lengths) without allocating and without touching the data payloads.
/// After that, [`iter`](Self::iter), [`get`](Self::get) and
/// [`get_by_name`](Self::get_by_name) hand out [`TensorView`]s that point
/// into the buffer, again without allocating. Cost: O(number of tensors),
/// whatever their size.
///
/// ```
/// use ndarray::array;
/// use tenstore::{encode_buffer, TensorRef, Tensors};
///
/// let image = array![[0u8, 255], [255, 0]];
/// let logits = array![0.5f32, -1.0];
/// let bytes = encode_buffer(&[
///     TensorRef::from_array("image", &image)?,
///     TensorRef::from_array("logits", &logits)?,
/// ])?;
/// let sample = Tensors::parse(&bytes)?;
/// assert_eq!(sample.len(), 2);
/// let logits_view = sample.get_by_name("logits").unwrap();
/// assert_eq!(logits_view.as_slice::<f32>()?, &[0.5, -1.0]);
/// # Ok::<(), tenstore::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Tensors<'a> {
    buf: &'a [u8],
    toc: Toc,
}

/// Tensors whose positions a parse remembers, for `get` in O(1).
const REMEMBERED: usize = 8;

/// What a parse learned: the count, and where the first tensors' header
/// chunks start (`u32::MAX` where not remembered).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Toc {
    len: usize,
    at: [u32; REMEMBERED],
}

impl<'a> Tensors<'a> {
    /// Checks a whole buffer. An empty buffer is an empty list.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut offset = 0;
        let mut tensor = 0;
        let mut at = [u32::MAX; REMEMBERED];
        while offset < buf.len() {
            if let (Some(slot), Ok(o)) = (at.get_mut(tensor), u32::try_from(offset)) {
                *slot = o;
            }
            let (header, next) = read_chunk(buf, offset)?;
            let header = parse_header(tensor, header)?;
            if next >= buf.len() {
                return Err(Error::MissingData {
                    tensor,
                    offset: offset as u64,
                });
            }
            let (data, after) = read_chunk(buf, next)?;
            header.with_data(tensor, data)?;
            tensor += 1;
            offset = after;
        }
        Ok(Tensors {
            buf,
            toc: Toc { len: tensor, at },
        })
    }

    /// [`parse`](Self::parse) for a buffer that is likely out of cache (a
    /// value looked up in a store): first asks for its start and its end
    /// to be loaded together, so that the walk from chunk to chunk (each
    /// position read from the chunk before) does not wait for one cache
    /// miss after another. The same checks as `parse`.
    pub(crate) fn parse_cold(buf: &'a [u8]) -> Result<Self> {
        prefetch::ends(buf);
        Self::parse(buf)
    }

    /// A buffer that [`parse`](Self::parse) accepted before, with what it
    /// learned.
    pub(crate) fn from_checked(buf: &'a [u8], toc: Toc) -> Self {
        Tensors { buf, toc }
    }

    /// What parsing learned, to rebuild this from the same bytes.
    pub(crate) fn toc(&self) -> Toc {
        self.toc
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.toc.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.toc.len == 0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The tensors in order.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            buf: self.buf,
            offset: 0,
            remaining: self.toc.len,
        }
    }

    /// The tensor at `index`: O(1) for the first eight, which the parse
    /// remembers; a walk over the headers before it for later ones.
    pub fn get(&self, index: usize) -> Option<TensorView<'a>> {
        if index >= self.toc.len {
            return None;
        }
        match self.toc.at.get(index) {
            Some(&at) if at != u32::MAX => Iter {
                buf: self.buf,
                offset: at as usize,
                remaining: 1,
            }
            .next(),
            _ => self.iter().nth(index),
        }
    }

    /// The first tensor named `name`.
    pub fn get_by_name(&self, name: &str) -> Option<TensorView<'a>> {
        self.iter().find(|t| t.name() == name)
    }

    /// The tensors collected into a vector.
    pub fn to_vec(&self) -> Vec<TensorView<'a>> {
        self.iter().collect()
    }
}

/// The layout of the last buffer a reader checked, kept to recognise the
/// next one: samples of a dataset mostly share their names, dtypes and
/// shapes, so their buffers differ only in their data payloads.
///
/// [`Tensors::parse`] reads a buffer's length and every byte that is not
/// a data payload (chunk prefixes, header payloads, padding), each at a
/// position that the bytes before it determine, and nothing else. A
/// layout keeps the runs of those bytes of one accepted buffer, as they
/// were. A later buffer of the same length whose bytes at those runs are
/// equal would make `parse` read the same positions and see the same
/// values, chunk after chunk, so it would be accepted with the same table
/// of contents: [`Tensors::parse_cached`] hands that out without walking
/// the chunks again. Any difference (one byte of a header, of a length,
/// of padding; another length) falls back to the full `parse`, whose
/// result is then returned as is. A view is never handed out over bytes
/// that were not checked: the bytes compared are the checked ones.
///
/// Comparing the runs costs one `memcmp` per tensor, and their positions
/// are known before any is read, so their cache lines are asked for
/// together instead of one after another.
pub(crate) struct Layout {
    /// Length of the buffer learned from; `usize::MAX` when nothing is
    /// learned (no buffer has that length).
    len: usize,
    /// What `parse` returned for it.
    toc: Toc,
    /// The runs of checked bytes: `(start, end)` in the buffer.
    runs: [(u32, u32); RUNS],
    /// Runs in use.
    nruns: usize,
    /// The bytes of the runs, one after another.
    bytes: [u8; LAYOUT_BYTES],
    /// Buffers in a row that did not match: past [`GIVE_UP`], a reader
    /// whose buffers all differ learns only now and then.
    misses: u32,
    /// Buffers recognised, for tests.
    #[cfg(test)]
    hits: u64,
}

/// Runs a layout holds: one per tensor (a data payload's padding, then
/// the next header chunk and the next data prefix) and the last padding.
const RUNS: usize = REMEMBERED + 1;

/// Bytes of runs a layout holds: a header chunk of up to 5 dimensions
/// (80), a data prefix (16) and at most 63 bytes of padding per tensor.
const LAYOUT_BYTES: usize = 160 * REMEMBERED;

/// Misses in a row after which a layout is learned only every
/// [`RELEARN`]th buffer.
const GIVE_UP: u32 = 8;

/// See [`GIVE_UP`].
const RELEARN: u32 = 64;

impl Default for Layout {
    fn default() -> Self {
        Layout {
            len: usize::MAX,
            toc: Toc {
                len: 0,
                at: [u32::MAX; REMEMBERED],
            },
            runs: [(0, 0); RUNS],
            nruns: 0,
            bytes: [0; LAYOUT_BYTES],
            misses: 0,
            #[cfg(test)]
            hits: 0,
        }
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("len", &self.len)
            .field("tensors", &self.toc.len)
            .field("runs", &&self.runs[..self.nruns])
            .finish()
    }
}

impl Layout {
    /// Whether `buf` holds, at every run, the bytes learned, and has the
    /// length learned.
    #[inline]
    fn matches(&self, buf: &[u8]) -> bool {
        if buf.len() != self.len {
            return false;
        }
        let runs = &self.runs[..self.nruns.min(RUNS)];
        for &(start, end) in runs {
            prefetch::span(buf, start as usize, end as usize);
        }
        let mut k = 0;
        for &(start, end) in runs {
            let (start, end) = (start as usize, end as usize);
            let Some(n) = end.checked_sub(start) else {
                return false;
            };
            match (buf.get(start..end), self.bytes.get(k..k + n)) {
                (Some(have), Some(learned)) if have == learned => k += n,
                _ => return false,
            }
        }
        true
    }

    /// Learns the layout of `buf`, which `parse` accepted with `toc`.
    /// Leaves the layout empty when `buf` has more tensors or more checked
    /// bytes than it holds room for.
    fn learn(&mut self, buf: &[u8], toc: Toc) {
        self.len = usize::MAX;
        self.nruns = 0;
        if toc.len > REMEMBERED || u32::try_from(buf.len()).is_err() {
            return;
        }
        let mut it = Iter {
            buf,
            offset: 0,
            remaining: toc.len,
        };
        let mut run_start = 0;
        let mut k = 0;
        for _ in 0..toc.len {
            // Header chunk, then the data chunk's prefix.
            if it.payload().is_none() {
                return;
            }
            let Some(data) = it.payload() else { return };
            let Some(data_start) = (data.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)
            else {
                return;
            };
            if !self.push(buf, &mut k, run_start, data_start) {
                return;
            }
            // The data payload is skipped; its padding starts the next run.
            run_start = data_start + data.len();
        }
        if !self.push(buf, &mut k, run_start, buf.len()) {
            return;
        }
        self.len = buf.len();
        self.toc = toc;
    }

    /// Adds the run `buf[start..end]` at `bytes[*k..]`; false when there is
    /// no room.
    fn push(&mut self, buf: &[u8], k: &mut usize, start: usize, end: usize) -> bool {
        let Some(n) = end.checked_sub(start) else {
            return false;
        };
        match (
            self.runs.get_mut(self.nruns),
            self.bytes.get_mut(*k..*k + n),
            buf.get(start..end),
        ) {
            (Some(run), Some(dst), Some(src)) => {
                dst.copy_from_slice(src);
                *run = (start as u32, end as u32);
                self.nruns += 1;
                *k += n;
                true
            }
            _ => false,
        }
    }
}

impl<'a> Tensors<'a> {
    /// [`parse`](Self::parse) that first tries the layout of the last
    /// buffer `layout` learned (see [`Layout`]): when `buf` has it, the
    /// table of contents is reused without walking the chunks. Otherwise
    /// the buffer is parsed (its ends prefetched, as by
    /// [`parse_cold`](Self::parse_cold)), and an accepted buffer's layout
    /// is learned. Accepts and refuses exactly the buffers `parse` does,
    /// with the same errors.
    pub(crate) fn parse_cached(buf: &'a [u8], layout: &mut Layout) -> Result<Self> {
        if layout.matches(buf) {
            layout.misses = 0;
            #[cfg(test)]
            {
                layout.hits += 1;
            }
            return Ok(Tensors::from_checked(buf, layout.toc));
        }
        let tensors = Self::parse_cold(buf)?;
        // Wraps past GIVE_UP (never to 0 .. GIVE_UP), so that a reader
        // missing for billions of gets keeps relearning every RELEARN-th.
        layout.misses = layout.misses.checked_add(1).unwrap_or(GIVE_UP + 1);
        if layout.misses <= GIVE_UP || layout.misses.is_multiple_of(RELEARN) {
            layout.learn(buf, tensors.toc);
        }
        Ok(tensors)
    }
}

impl<'a> IntoIterator for Tensors<'a> {
    type Item = TensorView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Tensors<'a> {
    type Item = TensorView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Tensors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the tensors of a checked buffer.
#[derive(Clone)]
pub struct Iter<'a> {
    buf: &'a [u8],
    offset: usize,
    remaining: usize,
}

impl<'a> Iter<'a> {
    /// The payload of the (checked) chunk at `self.offset`, advancing past
    /// it.
    fn payload(&mut self) -> Option<&'a [u8]> {
        let start = self.offset.checked_add(PREFIX)?;
        let len_word = self.buf.get(self.offset + 8..start)?;
        let len = usize::try_from(u64::from_le_bytes(len_word.try_into().ok()?)).ok()?;
        let payload = self.buf.get(start..start.checked_add(len)?)?;
        self.offset = crate::codec::chunk::chunk_len(len)?.checked_add(self.offset)?;
        Some(payload)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = TensorView<'a>;

    fn next(&mut self) -> Option<TensorView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let header = self.payload();
        let data = self.payload();
        // The buffer was checked by `Tensors::parse`; should it somehow not
        // hold what was checked, the iteration ends instead of panicking.
        match view_of_checked(header?, data?) {
            Some(v) => {
                self.remaining -= 1;
                Some(v)
            }
            None => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Decodes a tenbin buffer into views of its tensors: the reference's
/// `decode_buffer`. Checks everything first, so it either returns every
/// tensor or an error.
///
/// ```
/// let bytes = std::fs::read("tests/golden/matrix.ten")?;
/// let tensors = tenstore::decode_buffer(&bytes)?;
/// assert_eq!(tensors[0].name(), "weights");
/// assert_eq!(tensors[0].shape(), [3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_buffer(buf: &[u8]) -> Result<Vec<TensorView<'_>>> {
    Ok(Tensors::parse(buf)?.to_vec())
}

/// A checked tenbin buffer that owns its bytes, of whatever kind: a
/// `Vec<u8>`, a memory map ([`load`](crate::load) returns one), a received
/// message. It lends [`Tensors`] views for as long as it lives.
///
/// ```
/// use tenstore::{encode_buffer, TensorBuf, TensorRef};
///
/// let bytes = encode_buffer(&[TensorRef::raw("x", tenstore::DType::U8, &[3], &[1, 2, 3])?])?;
/// let buf = TensorBuf::new(bytes)?;
/// assert_eq!(buf.tensors().get(0).unwrap().data(), &[1, 2, 3]);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub struct TensorBuf<D> {
    data: D,
    toc: Toc,
}

impl<D: AsRef<[u8]>> TensorBuf<D> {
    /// Checks the bytes and takes ownership of them.
    pub fn new(data: D) -> Result<Self> {
        let toc = Tensors::parse(data.as_ref())?.toc();
        Ok(TensorBuf { data, toc })
    }

    /// The tensors, borrowed from this buffer.
    pub fn tensors(&self) -> Tensors<'_> {
        Tensors::from_checked(self.data.as_ref(), self.toc)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.toc.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.toc.len == 0
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> D {
        self.data
    }
}

impl<D: AsRef<[u8]>> fmt::Debug for TensorBuf<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TensorBuf").field(&self.tensors()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_buffer, DType, TensorRef};

    /// A sample of the standard layout: u1 3x4x5 "image", f4 [10] "logits",
    /// i8 [1] "label", filled from `seed`.
    fn sample(seed: u8) -> Vec<u8> {
        sample_as(seed, ("image", DType::U8, &[3, 4, 5]), "logits", "label")
    }

    fn sample_as(seed: u8, image: (&str, DType, &[usize]), logits: &str, label: &str) -> Vec<u8> {
        let data: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
        let floats: Vec<u8> = (0..40u8).map(|i| i ^ seed).collect();
        let long = [seed; 8];
        encode_buffer(&[
            TensorRef::raw(image.0, image.1, image.2, &data).unwrap(),
            TensorRef::raw(logits, DType::F32, &[10], &floats).unwrap(),
            TensorRef::raw(label, DType::I64, &[1], &long).unwrap(),
        ])
        .unwrap()
    }

    /// What `parse` says of `buf`, in a form to compare.
    fn outcome(r: Result<Tensors<'_>>) -> std::result::Result<Vec<TensorView<'_>>, String> {
        r.map(|t| t.to_vec()).map_err(|e| format!("{e:?}"))
    }

    /// A layout that learned `buf`.
    fn primed(buf: &[u8]) -> Layout {
        let mut layout = Layout::default();
        Tensors::parse_cached(buf, &mut layout).unwrap();
        assert_eq!(layout.len, buf.len(), "{layout:?}");
        layout
    }

    /// Checks that `parse_cached` with a layout learned from `learned`
    /// says of `buf` what `parse` says, and returns whether it recognised
    /// the layout.
    fn agrees(learned: &[u8], buf: &[u8]) -> bool {
        let mut layout = primed(learned);
        let hits = layout.hits;
        let cached = outcome(Tensors::parse_cached(buf, &mut layout));
        let hit = layout.hits > hits;
        assert_eq!(cached, outcome(Tensors::parse(buf)), "{buf:?}");
        // And so does a second look, now that it learned `buf` (when
        // `parse` accepted it).
        let again = outcome(Tensors::parse_cached(buf, &mut layout));
        assert_eq!(again, outcome(Tensors::parse(buf)));
        hit
    }

    /// Offsets of `buf` that `parse` reads: everything but data payloads.
    fn checked_offsets(buf: &[u8]) -> Vec<usize> {
        let t = Tensors::parse(buf).unwrap();
        let data: Vec<std::ops::Range<usize>> = t
            .iter()
            .map(|v| {
                let start = v.data().as_ptr() as usize - buf.as_ptr() as usize;
                start..start + v.nbytes()
            })
            .collect();
        (0..buf.len())
            .filter(|i| !data.iter().any(|r| r.contains(i)))
            .collect()
    }

    #[test]
    fn a_buffer_differing_only_in_data_reuses_the_layout() {
        let a = sample(3);
        let b = sample(7);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        assert!(agrees(&a, &b));
        // The views are over b's own bytes.
        let mut layout = primed(&a);
        let t = Tensors::parse_cached(&b, &mut layout).unwrap();
        assert_eq!(t.get(0).unwrap().data().as_ptr(), b[96..].as_ptr());
        assert_eq!(
            t.get(2).unwrap().as_slice::<i64>().unwrap(),
            &[0x0707070707070707]
        );
    }

    #[test]
    fn any_change_to_a_checked_byte_is_checked_again() {
        let a = sample(3);
        let offsets = checked_offsets(&a);
        // 3 header chunks of 80 bytes, 3 data prefixes, 4 + 24 + 56 bytes
        // of padding.
        assert_eq!(offsets.len(), 3 * 80 + 3 * 16 + 4 + 24 + 56);
        for &i in &offsets {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = a.clone();
                b[i] ^= flip;
                assert!(!agrees(&a, &b), "byte {i} ^ {flip:#x} reused the layout");
            }
        }
        // A data byte, by contrast, is not the layout's business: every
        // byte outside the checked ones may change and the layout holds.
        for i in (0..a.len()).filter(|i| !offsets.contains(i)) {
            let mut b = a.clone();
            b[i] ^= 0xff;
            assert!(agrees(&a, &b), "data byte {i} lost the layout");
        }
    }

    #[test]
    fn same_length_with_another_name_dtype_or_shape_is_checked_again() {
        let a = sample(3);
        let image = |name, dtype, shape| sample_as(3, (name, dtype, shape), "logits", "label");
        let others = [
            image("imagf", DType::U8, &[3, 4, 5]),
            image("image", DType::I8, &[3, 4, 5]),
            image("image", DType::U8, &[5, 4, 3]),
            image("image", DType::U8, &[3, 20, 1]),
            image("image", DType::U16, &[3, 2, 5]),
            sample_as(3, ("image", DType::U8, &[3, 4, 5]), "logitz", "label"),
            sample_as(3, ("image", DType::U8, &[3, 4, 5]), "logits", ""),
        ];
        for b in &others {
            assert_eq!(b.len(), a.len());
            assert!(!agrees(&a, b));
            let mut layout = primed(&a);
            let t = Tensors::parse_cached(b, &mut layout).unwrap();
            assert_eq!(t.to_vec(), Tensors::parse(b).unwrap().to_vec());
        }
    }

    #[test]
    fn other_lengths_are_checked_again() {
        let a = sample(3);
        for len in [0, 1, 16, 80, 96, a.len() - 64, a.len() - 1] {
            assert!(!agrees(&a, &a[..len]), "truncated to {len}");
        }
        let mut longer = a.clone();
        longer.extend_from_slice(&[0; 64]);
        assert!(!agrees(&a, &longer));
        let mut two = a.clone();
        two.extend_from_slice(&a);
        assert!(!agrees(&a, &two));
        // The empty buffer is a layout of its own.
        assert!(agrees(&[], &[]));
        assert!(!agrees(&[], &a));
    }

    #[test]
    fn a_refused_buffer_leaves_the_layout_learned() {
        let a = sample(3);
        let mut layout = primed(&a);
        let mut bad = sample(5);
        bad[0] = b'!';
        assert!(Tensors::parse_cached(&bad, &mut layout).is_err());
        let hits = layout.hits;
        assert!(Tensors::parse_cached(&sample(9), &mut layout).is_ok());
        assert_eq!(layout.hits, hits + 1);
    }

    #[test]
    fn many_tensors_or_buffers_that_all_differ_are_still_checked() {
        // More tensors than a layout holds: never recognised, still right.
        let data = [1u8; 3];
        let refs: Vec<TensorRef<'_>> = (0..REMEMBERED + 2)
            .map(|_| TensorRef::raw("x", DType::U8, &[3], &data).unwrap())
            .collect();
        let many = encode_buffer(&refs).unwrap();
        let mut layout = Layout::default();
        for _ in 0..3 {
            let t = Tensors::parse_cached(&many, &mut layout).unwrap();
            assert_eq!(t.len(), REMEMBERED + 2);
            assert_eq!(t.to_vec(), Tensors::parse(&many).unwrap().to_vec());
        }
        assert_eq!(layout.hits, 0);
        // Buffers that differ from the last (in length or in the shape
        // word): learned less often, always right,
        // and a run of equal ones is recognised again.
        let mut layout = Layout::default();
        for n in 0..200usize {
            let v = vec![n as u8; n];
            let b = encode_buffer(&[TensorRef::raw("x", DType::U8, &[n], &v).unwrap()]).unwrap();
            let t = Tensors::parse_cached(&b, &mut layout).unwrap();
            assert_eq!(t.to_vec(), Tensors::parse(&b).unwrap().to_vec());
        }
        assert_eq!(layout.hits, 0);
        let a = sample(3);
        for i in 0..2 * RELEARN {
            let b = sample(i as u8);
            let t = Tensors::parse_cached(&b, &mut layout).unwrap();
            assert_eq!(t.to_vec(), Tensors::parse(&b).unwrap().to_vec());
        }
        assert!(layout.hits >= RELEARN as u64, "{}", layout.hits);
        assert!(agrees(&a, &sample(4)));
    }
}
