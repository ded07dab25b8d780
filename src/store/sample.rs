//! A stored sample as reads hand it out: a key and its tensors, borrowed.

use std::fmt;

use crate::codec::{Iter, Tensors};
use crate::tensor::TensorView;

/// A sample borrowed from a store snapshot: its key and its tensors, as
/// zero-copy views over the store's mapped pages.
///
/// Getting a `Sample` checks its bytes once (O(number of tensors)); the
/// views it hands out cost nothing more. It cannot outlive the snapshot it
/// came from.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    key: &'a [u8],
    tensors: Tensors<'a>,
}

impl<'a> Sample<'a> {
    pub(crate) fn new(key: &'a [u8], tensors: Tensors<'a>) -> Self {
        Sample { key, tensors }
    }

    /// The key's bytes.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// The key as text, when it is UTF-8.
    pub fn key_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.key).ok()
    }

    /// The tensors.
    pub fn tensors(&self) -> Tensors<'a> {
        self.tensors
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the sample holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor at `index`.
    pub fn get(&self, index: usize) -> Option<TensorView<'a>> {
        self.tensors.get(index)
    }

    /// The first tensor named `name`.
    pub fn get_by_name(&self, name: &str) -> Option<TensorView<'a>> {
        self.tensors.get_by_name(name)
    }

    /// The tensors in order.
    pub fn iter(&self) -> Iter<'a> {
        self.tensors.iter()
    }

    /// The stored tenbin buffer, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.tensors.as_bytes()
    }
}

impl<'a> IntoIterator for Sample<'a> {
    type Item = TensorView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sample")
            .field("key", &self.key.escape_ascii().to_string())
            .field("tensors", &self.tensors)
            .finish()
    }
}
