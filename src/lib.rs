//! # tenstore
//!
//! Tensors stored in the *tenbin* binary format of webdataset's `tenbin`
//! module (`.ten` files, tensorcom's ZeroMQ messages), byte-compatible with
//! the reference in both directions and stricter than it on malformed
//! input.
//!
//! ## The format in one paragraph
//!
//! A buffer is a sequence of chunks: the magic `~TenBin~`, a little-endian
//! int64 length `n`, `n` payload bytes, zero padding to a multiple of 64.
//! Each array is two chunks: a header (dtype code, name, ndim, dims as int64
//! words) and its data in C order. `FORMAT.md`, at the root of the
//! repository and the package, describes the full layout.
//!
//! ## A tour
//!
//! ```
//! use ndarray::{array, Array3};
//! use tenstore::{encode_buffer, Tensors, TensorRef};
//!
//! // Encode: arrays of any element type, named, in one pass.
//! let image = Array3::<u8>::zeros((3, 32, 32));
//! let label = array![7i64];
//! let bytes = encode_buffer(&[
//!     TensorRef::from_array("image", &image)?,
//!     TensorRef::from_array("label", &label)?,
//! ])?;
//!
//! // Decode: one checking pass, then zero-copy views.
//! let sample = Tensors::parse(&bytes)?;
//! let image_view = sample.get_by_name("image").unwrap();
//! assert_eq!(image_view.shape(), [3, 32, 32]);
//! assert_eq!(image_view.array::<u8>()?, image.view().into_dyn());
//! assert_eq!(sample.get(1).unwrap().as_slice::<i64>()?, &[7]);
//! # Ok::<(), tenstore::Error>(())
//! ```
//!
//! ## The reference's functions, in Rust form
//!
//! | reference | tenstore |
//! | --- | --- |
//! | `encode_buffer(l, infos)` | [`encode_buffer`], [`encode_into`] (a caller's slice), [`encoded_len`] |
//! | `decode_buffer(buf, infos)` | [`decode_buffer`], [`Tensors::parse`] (no allocation) |
//! | `encode_list` / `decode_list` | [`encode_list`] / [`decode_list`], [`decode_pair`] |
//! | `encode_chunks` / `decode_chunks` | [`encode_chunks`] / [`decode_chunks`] |
//! | `write(stream, l)` / `read(stream, n)` | [`write()`] / [`read()`], [`read_all`] |
//! | `save(fname, *args)` / `load(fname)` | [`save`] / [`load`] (a memory map), [`FileOptions`] for `nocheck` |
//!
//! Names (the reference's `infos`) travel with every tensor. They are at
//! most 8 ASCII bytes.
//!
//! ## Zero copy
//!
//! Decoding never copies data. A [`TensorView`] hands out an
//! `ndarray::ArrayViewD` when the data address is aligned for the element
//! type; every payload sits at a multiple of 16 bytes from the start of its
//! buffer, so a buffer that starts 8-byte aligned (a `Vec`, a memory map)
//! views every dtype in place. [`TensorView::cow_array`] copies only when
//! the data is misaligned.
//!
//! ## Beyond the codec
//!
//! - [`store`]: samples (a key and named tensors) in LMDB or in append-only
//!   `.ten` shards, read back as zero-copy views ([`store::Store`],
//!   [`store::Reader`], [`store::Sample`]).
//! - [`net`]: tensors over ZeroMQ (single and multipart, as tensorcom
//!   sends them) and SCTP, and the `tenstore serve` request server.
//! - [`plan`]: epoch plans: seeded, resumable sample orders split across
//!   ranks and loader workers ([`EpochPlan`]), which readers follow
//!   ([`store::Reader::plan_samples`]).
//! - [`npy`]: `.npy` files in and out.
//!
//! ## Features
//!
//! - `cli` (default): the `tenstore` binary and the crates only it uses
//!   (`clap`, `tar`, `flate2`, `sha2`, `signal-hook`); turns on `zmq`.
//! - `zmq` (default): ZeroMQ, for the `net` zsend/zrecv functions and the
//!   `serve` server (`net::Server`, `net::push`).
//!
//! With `default-features = false` the crate builds the codec, the stores,
//! `.npy` and SCTP, and compiles none of the crates above.
//!
//! ## Strictness
//!
//! Every length field is checked against the bytes really there before it
//! is used; every fault has its own [`Error`] variant with the byte offset
//! or tensor index. See the crate README for the list of faults of the
//! reference that tenstore does not copy.

#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(target_endian = "big")]
compile_error!(
    "tenstore reads and writes little-endian data in place and supports little-endian targets only"
);

pub mod codec;
pub mod dtype;
pub mod error;
pub mod io;
pub mod net;
pub mod npy;
pub mod plan;
pub mod store;
pub mod tensor;

pub use codec::{
    decode_buffer, decode_chunks, decode_list, decode_pair, encode_buffer, encode_chunks,
    encode_into, encode_list, encoded_len, TensorBuf, Tensors,
};
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use io::{load, load_with, read, read_all, save, save_with, write, FileOptions};
pub use plan::{EpochPlan, PlanConfig, PlanError, PlanState};
pub use tensor::{AnyArray, AsTensorRef, Shape, Tensor, TensorRef, TensorView, MAX_NDIM};

pub use half;
pub use ndarray;
pub use num_complex;
