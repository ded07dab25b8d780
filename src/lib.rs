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
//!   sends them) and SCTP.
//! - [`serve`]: the `tenstore serve` request protocol and server, the
//!   `tenstore push` stream and `tenstore pull` (a stream into a store).
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
//!   `serve` server, push stream and pull (`serve::Server`, `serve::push`,
//!   `serve::pull`).
//!
//! With `default-features = false` the crate builds the codec, the stores,
//! `.npy` and SCTP, and compiles none of the crates above.
//!
//! ## Memory maps: the one precondition of opening a store
//!
//! Stores are read through memory maps (LMDB's `data.mdb`, the shard
//! store's `.ten` shards), and samples are views into them. Opening a
//! store ([`store::Store::open`], [`store::LmdbStore::open`],
//! [`store::ShardStore::open`]) is nevertheless a safe function, by a
//! deliberate, documented exception: it relies on one precondition the
//! compiler cannot check. **While a store is open in any process, its
//! files must change only through tenstore** (for LMDB: through any LMDB
//! client, which LMDB's lock file coordinates). What changing them by
//! other means does to a process that has the store open:
//!
//! - **Truncating** a mapped file (`truncate`, a shell `>` redirect,
//!   copying another file over it, another program's `set_len`) makes the
//!   next read of a cut page raise `SIGBUS`, which kills the process, from
//!   safe code. This is true of every program that maps files; heed makes
//!   its own open `unsafe` for this reason.
//! - **Rewriting** bytes in place changes what views already handed out
//!   show, under a snapshot that promised they would not change (and for
//!   LMDB may make it follow damaged pages). The shard store's crc32c
//!   checks (scans, `verify`, `verify_reads`) catch such damage only when
//!   the bytes are checked, not after.
//! - Renaming, replacing by rename, or deleting a file is harmless to a
//!   store already open: its maps keep the old file alive.
//!
//! What tenstore does about the files it owns: it never shortens or
//! rewrites a range a snapshot may read. Shards are only appended to; a
//! failed append cuts back only bytes no sidecar record names, and a
//! failure once sidecar records of a batch may be visible stops the writer
//! until the store is reopened; compaction writes new shards and unlinks
//! the old; recovery at open cuts only bytes past the last committed
//! record; LMDB's files change only through LMDB. Shard snapshots check
//! every record they index against the length they mapped, so a shard
//! damaged or cut *before* it is mapped is reported as damage, never read
//! out of bounds. The precondition is about changes while a store is open.
//!
//! [`load`], which maps one file the caller names, is `unsafe` instead:
//! there the crate knows nothing of who else writes that file.
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
#[doc(hidden)]
pub mod proofs;
#[cfg(feature = "s3")]
pub mod remote;
pub mod serve;
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
