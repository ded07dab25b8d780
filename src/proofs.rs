//! Misuse the borrow checker rejects: each program below would read memory
//! after the buffer, map or snapshot behind it ended, and each must fail to
//! compile. `cargo test --doc` checks that it does; nightly rustdoc also
//! checks that it fails with the error code named (stable ignores codes),
//! which `scripts/sanitize` runs. Each was checked to fail with exactly
//! that one error and nothing else. Not part of the API; kept here so the
//! proofs stay true as the code changes.
//!
//! 1. A shard sample outliving its reader (whose maps it borrows):
//!
//! ```compile_fail,E0597
//! # use tenstore::store::{ShardOptions, ShardStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = ShardStore::open(dir.path(), &ShardOptions { create: true, ..Default::default() })?;
//! let sample = {
//!     let reader = store.reader()?;
//!     reader.require(b"a")?
//! };
//! println!("{:?}", sample.key());
//! # Ok(()) }
//! ```
//!
//! 2. Shard bytes kept across `refresh` (which may drop the maps they are
//!    in):
//!
//! ```compile_fail,E0502
//! # use tenstore::store::{ShardOptions, ShardStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = ShardStore::open(dir.path(), &ShardOptions { create: true, ..Default::default() })?;
//! let mut reader = store.reader()?;
//! let sample = reader.require(b"a")?;
//! reader.refresh()?;
//! println!("{:?}", sample.key());
//! # Ok(()) }
//! ```
//!
//! 3. An LMDB sample outliving its read transaction:
//!
//! ```compile_fail,E0597
//! # use tenstore::store::{LmdbOptions, LmdbStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = LmdbStore::open(dir.path(), &LmdbOptions { create: true, ..Default::default() })?;
//! let sample = {
//!     let reader = store.reader()?;
//!     reader.require(b"a")?
//! };
//! println!("{:?}", sample.key());
//! # Ok(()) }
//! ```
//!
//! 4. LMDB bytes kept across `refresh` (which ends the transaction whose
//!    pages they are):
//!
//! ```compile_fail,E0502
//! # use tenstore::store::{LmdbOptions, LmdbStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = LmdbStore::open(dir.path(), &LmdbOptions { create: true, ..Default::default() })?;
//! let mut reader = store.reader()?;
//! let bytes = reader.get_raw(b"a")?;
//! reader.refresh()?;
//! println!("{bytes:?}");
//! # Ok(()) }
//! ```
//!
//! 5. An LMDB reader outliving its store (whose environment unmaps):
//!
//! ```compile_fail,E0597
//! # use tenstore::store::{LmdbOptions, LmdbStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let reader = {
//!     let store = LmdbStore::open(dir.path(), &LmdbOptions { create: true, ..Default::default() })?;
//!     store.reader()?
//! };
//! println!("{:?}", reader.len());
//! # Ok(()) }
//! ```
//!
//! 6. Keys of a `Reader` kept across its `refresh`:
//!
//! ```compile_fail,E0502
//! # use tenstore::store::{Store, StoreOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = Store::open(dir.path(), &StoreOptions { create: true, ..Default::default() })?;
//! let mut reader = store.reader()?;
//! let keys = reader.keys(b"", None)?;
//! reader.refresh()?;
//! println!("{}", keys.count());
//! # Ok(()) }
//! ```
//!
//! 7. A sample sent to a thread that may outlive its reader:
//!
//! ```compile_fail,E0597
//! # use tenstore::store::{ShardOptions, ShardStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = ShardStore::open(dir.path(), &ShardOptions { create: true, ..Default::default() })?;
//! let reader = store.reader()?;
//! let sample = reader.require(b"a")?;
//! std::thread::spawn(move || println!("{:?}", sample.key()));
//! # Ok(()) }
//! ```
//!
//! 8. A view outliving its buffer:
//!
//! ```compile_fail,E0597
//! # use tenstore::{Tensors, TensorRef};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let a = ndarray::array![1.0f32, 2.0];
//! let view = {
//!     let bytes = tenstore::encode_buffer(&[TensorRef::from_array("x", &a)?])?;
//!     Tensors::parse(&bytes)?.get(0).unwrap()
//! };
//! println!("{:?}", view.data());
//! # Ok(()) }
//! ```
//!
//! 9. A view outliving its ZeroMQ message:
//!
//! ```compile_fail,E0515
//! use tenstore::net::ZmqBytes;
//! use tenstore::{TensorBuf, TensorView};
//!
//! fn first(message: TensorBuf<ZmqBytes>) -> TensorView<'static> {
//!     message.tensors().get(0).unwrap()
//! }
//! ```
//!
//! 10. A view outliving the memory map of a loaded file:
//!
//! ```compile_fail,E0515
//! use tenstore::TensorView;
//!
//! fn first(path: &std::path::Path) -> TensorView<'static> {
//!     // SAFETY: (not the point here) nothing else writes the file.
//!     let file = unsafe { tenstore::load(path) }.unwrap();
//!     file.tensors().get(0).unwrap()
//! }
//! ```
//!
//! 11. An `ndarray` view outliving the buffer of the tensor it views:
//!
//! ```compile_fail,E0515
//! fn values(bytes: Vec<u8>) -> ndarray::ArrayViewD<'static, f32> {
//!     let tensors = tenstore::Tensors::parse(&bytes).unwrap();
//!     tensors.get(0).unwrap().array::<f32>().unwrap()
//! }
//! ```
