//! The tenbin codec: chunks, headers, buffers and frame lists.
//!
//! It knows nothing of files, databases or sockets: it turns tensors into
//! bytes and bytes into borrowed views.

mod chunk;
mod decode;
mod encode;
mod frames;
mod header;
pub(crate) mod prefetch;

pub use chunk::{decode_chunks, encode_chunks, MAGIC};
pub(crate) use decode::Layout;
pub use decode::{decode_buffer, Iter, TensorBuf, Tensors};
pub(crate) use encode::encode_to;
pub use encode::{encode_buffer, encode_into, encoded_len};
pub use frames::{decode_list, encode_list};
pub use header::decode_pair;

pub(crate) use chunk::{check_padding, chunk_len_u64, pad_len, parse_prefix, read_chunk, PREFIX};
pub(crate) use header::{parse_header, Header, MAX_HEADER_LEN};
