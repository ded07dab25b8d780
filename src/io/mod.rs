//! Streams and files: the codec over `std::io` and the file system.

mod file;
mod stream;

pub use file::{load, load_with, save, save_with, FileOptions, MappedFile};
pub use stream::{read, read_all, write};
