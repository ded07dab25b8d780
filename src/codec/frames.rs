//! Frame lists: each tensor as a raw header payload and a raw data payload,
//! with no magic, length or padding. This is what multipart ZeroMQ messages
//! carry (the reference's `encode_list`/`decode_list`).

use std::borrow::Cow;

use crate::codec::header::{decode_pair, header_len, write_header};
use crate::error::{Error, Result};
use crate::tensor::{AsTensorRef, Source, TensorView};

/// Encodes `tensors` as frames: header, data, header, data, ...
///
/// Header frames are new (a few dozen bytes each); data frames borrow the
/// tensors' bytes, except for non-contiguous arrays, which are gathered in
/// C order.
///
/// ```
/// use tenstore::{decode_list, encode_list, DType, TensorRef};
///
/// let t = [TensorRef::raw("x", DType::U16, &[2], &[1, 0, 2, 0])?];
/// let frames = encode_list(&t);
/// assert_eq!(frames.len(), 2);
/// assert_eq!(frames[0].len(), 8 * (3 + 1));
/// assert_eq!(&*frames[1], &[1, 0, 2, 0]);
/// assert_eq!(decode_list(&frames)?[0].to_vec::<u16>()?, vec![1, 2]);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub fn encode_list<T: AsTensorRef>(tensors: &[T]) -> Vec<Cow<'_, [u8]>> {
    let mut frames = Vec::with_capacity(2 * tensors.len());
    for t in tensors {
        let t = t.as_tensor_ref();
        let mut header = vec![0u8; header_len(t.shape().len())];
        write_header(&t, &mut header);
        frames.push(Cow::Owned(header));
        frames.push(match t.source() {
            Source::Bytes(b) => Cow::Borrowed(b),
            Source::Strided(a) => {
                let mut data = Vec::with_capacity(t.nbytes());
                // Writing to a Vec cannot fail.
                let _ = a.write_c_order(&mut |run| {
                    data.extend_from_slice(run);
                    Ok(())
                });
                Cow::Owned(data)
            }
        });
    }
    frames
}

/// Decodes frames (header, data, header, data, ...) into views that borrow
/// them. Strict where the reference is lenient: an odd number of frames,
/// a header whose ndim disagrees with its length, or a data frame of the
/// wrong length is an error.
pub fn decode_list<F: AsRef<[u8]>>(frames: &[F]) -> Result<Vec<TensorView<'_>>> {
    if !frames.len().is_multiple_of(2) {
        return Err(Error::OddFrames {
            frames: frames.len(),
        });
    }
    frames
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| decode_pair(i, pair[0].as_ref(), pair[1].as_ref()))
        .collect()
}
