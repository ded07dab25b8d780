//! Live interop with the reference implementation, webdataset's `tenbin`
//! (Python), run at test time.
//!
//! - Python writes, Rust reads: `tests/py/py_write.py` writes random arrays
//!   with `save`, `encode_buffer` and `encode_list`, plus `expected.json`
//!   holding every element; Rust reads each form with `load`,
//!   `decode_buffer`/`Tensors::parse`, `read`/`read_all` on a `File`, and
//!   `decode_list`, and compares name, dtype, shape and every element.
//! - Rust writes, Python reads: Rust writes random arrays (non-contiguous
//!   views included) with `save`, `encode_buffer`, `write` and
//!   `encode_list`; `tests/py/py_read.py` reads each with the reference and
//!   compares element by element.
//! - Byte-identical: Rust's encodings of Python's arrays equal Python's
//!   bytes, and Python's encodings of Rust's arrays (0-d ones included)
//!   equal Rust's bytes, buffer and frames alike.
//!
//! Python is `$TENSTORE_PYTHON` or `.venv/bin/python` (see
//! `tests/common/mod.rs`); `./scripts/test` sets the venv up.
//!
//! The JSON of expected values carries, for float dtypes, each element's bit
//! pattern beside its float64 value: serde_json (without its
//! `float_roundtrip` feature) may parse a float64 one ulp off, so exact
//! comparisons use the bits and the values are checked against them within
//! one ulp.

#[macro_use]
mod common;

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use common::{random_array, reference_dtypes, run_py, TestElem, XorShift};
use serde::{Deserialize, Serialize};
use serde_json::Number;
use tenstore::half::f16;
use tenstore::ndarray::{arr0, s, ArrayBase, ArrayD, ArrayViewD, Data, Dimension, Ix2, Ix3, IxDyn};
use tenstore::{
    decode_buffer, decode_list, encode_buffer, encode_list, load, read, read_all, save, write,
    DType, Tensor, TensorRef, TensorView, Tensors,
};

/// Seed of both sides' random arrays.
const SEED: u64 = 20_240_611;

// ---------------------------------------------------------------------------
// The JSON both sides share (see tests/py/tenbin_util.py).

#[derive(Serialize, Deserialize, Debug)]
struct Manifest {
    seed: u64,
    arrays: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    /// Every element, flat, in C order.
    values: Vec<Number>,
    /// Float dtypes: each element's bit pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bits: Option<Vec<u64>>,
}

/// The entry for an array or view of any layout: its elements in logical
/// (C) order.
fn entry_of<S, D, T>(name: &str, a: &ArrayBase<S, D>) -> Entry
where
    S: Data<Elem = T>,
    D: Dimension,
    T: TestElem,
{
    let (values, bits): (Vec<Number>, Vec<Option<u64>>) = a.iter().map(|x| x.to_json()).unzip();
    let is_float = matches!(T::DTYPE, DType::F16 | DType::F32 | DType::F64);
    Entry {
        name: name.to_owned(),
        dtype: T::DTYPE.code().to_owned(),
        shape: a.shape().to_vec(),
        values,
        bits: is_float.then(|| {
            bits.into_iter()
                .map(|b| b.expect("every float has bits"))
                .collect()
        }),
    }
}

fn entry_of_tensor(t: &Tensor) -> Entry {
    with_dtype!(t.dtype(), T => entry_of(t.name(), &t.array::<T>().expect("dtype matches")))
}

/// The tensor an entry describes, built from its values.
fn tensor_of_entry(index: usize, e: &Entry) -> Tensor {
    let dtype = DType::from_code(&e.dtype)
        .filter(|d| d.is_reference())
        .unwrap_or_else(|| panic!("expected.json array {index}: unknown dtype {:?}", e.dtype));
    let n: usize = e.shape.iter().product();
    assert_eq!(
        e.values.len(),
        n,
        "expected.json array {index}: value count vs shape {:?}",
        e.shape
    );
    if let Some(bits) = &e.bits {
        assert_eq!(
            bits.len(),
            n,
            "expected.json array {index}: bit pattern count"
        );
    }
    with_dtype!(dtype, T => {
        let elems: Vec<T> = e
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                T::from_json(v, e.bits.as_ref().map(|b| b[i]))
                    .unwrap_or_else(|err| panic!("expected.json array {index} element {i}: {err}"))
            })
            .collect();
        let array = ArrayD::from_shape_vec(IxDyn(&e.shape), elems).expect("count checked");
        Tensor::new(e.name.as_str(), array)
            .unwrap_or_else(|err| panic!("expected.json array {index}: {err}"))
    })
}

fn read_manifest(path: &Path) -> Manifest {
    let text = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn write_manifest(path: &Path, arrays: Vec<Entry>) {
    let file = BufWriter::new(File::create(path).expect("create expected.json"));
    serde_json::to_writer(file, &Manifest { seed: SEED, arrays }).expect("write expected.json");
}

// ---------------------------------------------------------------------------
// Comparisons.

fn check_elems<T: TestElem>(ctx: &str, got: impl IntoIterator<Item = T>, want: &ArrayViewD<'_, T>) {
    let mut count = 0;
    for (i, (g, w)) in got.into_iter().zip(want.iter()).enumerate() {
        assert!(
            g.same(*w),
            "{ctx}: element {i} (C order) is {g:?}, expected {w:?}"
        );
        count += 1;
    }
    assert_eq!(count, want.len(), "{ctx}: element count");
}

/// Checks a decoded view against the expected tensor: name, dtype, shape,
/// every element (through `cow_array`, which works at any alignment, and
/// `to_vec`), and the zero-copy `array` when the data is aligned.
fn check_view(ctx: &str, got: &TensorView<'_>, want: &Tensor) {
    assert_eq!(got.name(), want.name(), "{ctx}: name");
    assert_eq!(
        got.dtype(),
        want.dtype(),
        "{ctx}: dtype of {:?}",
        want.name()
    );
    assert_eq!(
        got.shape().to_vec(),
        want.shape(),
        "{ctx}: shape of {:?}",
        want.name()
    );
    assert_eq!(got.nbytes(), want.view().nbytes(), "{ctx}: data length");
    with_dtype!(want.dtype(), T => {
        let want = want.array::<T>().expect("expected tensor has its dtype");
        let cow = got
            .cow_array::<T>()
            .unwrap_or_else(|e| panic!("{ctx}: cow_array: {e}"));
        assert_eq!(cow.shape(), want.shape(), "{ctx}: array shape");
        check_elems(ctx, cow.iter().copied(), &want);
        let v = got.to_vec::<T>().unwrap_or_else(|e| panic!("{ctx}: to_vec: {e}"));
        check_elems(&format!("{ctx} (to_vec)"), v, &want);
        if got.is_aligned() {
            let a = got.array::<T>().unwrap_or_else(|e| panic!("{ctx}: array: {e}"));
            check_elems(&format!("{ctx} (array)"), a.iter().copied(), &want);
        }
    })
}

/// Checks an owned decoded tensor against the expected one.
fn check_tensor(ctx: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.name(), want.name(), "{ctx}: name");
    assert_eq!(got.dtype(), want.dtype(), "{ctx}: dtype");
    assert_eq!(got.shape(), want.shape(), "{ctx}: shape");
    with_dtype!(want.dtype(), T => {
        let a = got.array::<T>().unwrap_or_else(|e| panic!("{ctx}: array: {e}"));
        check_elems(ctx, a.iter().copied(), &want.array::<T>().expect("dtype"));
    });
    check_view(&format!("{ctx} (view)"), &got.view(), want);
}

fn check_views<'a>(form: &str, got: impl IntoIterator<Item = TensorView<'a>>, want: &[Tensor]) {
    let got: Vec<_> = got.into_iter().collect();
    assert_eq!(got.len(), want.len(), "{form}: number of tensors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        check_view(&format!("{form}: tensor {i}"), g, w);
    }
}

/// Asserts two byte strings are equal, reporting the first difference.
fn assert_same_bytes(ctx: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| {
        let lo = first.saturating_sub(8);
        format!("{:02x?}", &b[lo.min(b.len())..(first + 8).min(b.len())])
    };
    panic!(
        "{ctx}: bytes differ: lengths {} (rust) vs {} (python); first difference at byte {first}\n rust:   {}\n python: {}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

fn write_frames<F: AsRef<[u8]>>(dir: &Path, frames: &[F]) {
    fs::create_dir(dir).expect("create frames dir");
    for (i, f) in frames.iter().enumerate() {
        fs::write(dir.join(format!("part{i:03}.bin")), f.as_ref()).expect("write frame");
    }
}

fn read_frames(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| fs::read(p).expect("read frame"))
        .collect()
}

// ---------------------------------------------------------------------------
// Python's arrays.

/// What `py_write.py` wrote: its directory and the arrays it describes.
struct PythonSet {
    dir: tempfile::TempDir,
    expected: Vec<Tensor>,
}

impl PythonSet {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs `py_write.py` and reads its expected.json, checking that the set
/// covers what these tests promise to cover.
fn python_set() -> PythonSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_py(
        "py_write.py",
        [dir.path().as_os_str(), SEED.to_string().as_ref()],
    );
    let manifest = read_manifest(&dir.path().join("expected.json"));
    assert_eq!(manifest.seed, SEED);
    assert_eq!(
        out.trim(),
        format!("wrote {} arrays", manifest.arrays.len())
    );
    let expected: Vec<Tensor> = manifest
        .arrays
        .iter()
        .enumerate()
        .map(|(i, e)| tensor_of_entry(i, e))
        .collect();

    // Coverage: every reference dtype, 0-d, empty, rank 9, name lengths.
    for d in reference_dtypes() {
        let of = |f: &dyn Fn(&Tensor) -> bool| expected.iter().any(|t| t.dtype() == d && f(t));
        assert!(of(&|t| t.shape().is_empty()), "python set lacks a 0-d {d}");
        assert!(
            of(&|t| t.shape().contains(&0)),
            "python set lacks an empty {d}"
        );
        assert!(
            of(&|t| t.shape().len() == 9),
            "python set lacks a rank-9 {d}"
        );
        assert!(
            of(&|t| t.shape().iter().product::<usize>() >= 15),
            "python set lacks a larger {d}"
        );
    }
    for len in [0, 1, 8] {
        assert!(
            expected.iter().any(|t| t.name().len() == len),
            "no name of {len} characters"
        );
    }
    assert!(
        expected.iter().any(|t| t.view().nbytes() > 1 << 20),
        "no array over 1 MiB"
    );
    PythonSet { dir, expected }
}

#[test]
fn python_save_then_rust_load() {
    let set = python_set();
    // SAFETY: the file is in our own temporary directory; nothing modifies
    // it while it is mapped.
    let file = unsafe { load(set.path("sample.ten")) }.expect("load sample.ten");
    assert_eq!(file.len(), set.expected.len());
    let tensors = file.tensors();
    for (i, v) in tensors.iter().enumerate() {
        // Every payload of a mapped file is 16-byte aligned.
        assert!(
            v.is_aligned(),
            "load: tensor {i} ({:?}) is not aligned",
            v.name()
        );
    }
    check_views("load", tensors.iter(), &set.expected);
    // Lookup by name finds the first tensor of that name.
    let big = tensors.get_by_name("big").expect("tensor named big");
    check_view(
        "load: get_by_name(big)",
        &big,
        set.expected.iter().find(|t| t.name() == "big").unwrap(),
    );
}

#[test]
fn python_encode_buffer_then_rust_decode_buffer() {
    let set = python_set();
    let bytes = fs::read(set.path("buffer.bin")).expect("read buffer.bin");
    check_views(
        "decode_buffer",
        decode_buffer(&bytes).expect("decode_buffer"),
        &set.expected,
    );
    check_views(
        "Tensors::parse",
        Tensors::parse(&bytes).expect("parse").iter(),
        &set.expected,
    );

    // The same bytes one byte off alignment: views of multi-byte dtypes
    // are misaligned, and cow_array/to_vec must copy the right values.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let views = decode_buffer(&shifted[1..]).expect("decode_buffer, shifted");
    assert!(
        views.iter().any(|v| !v.is_aligned()),
        "the shifted buffer should misalign some views"
    );
    check_views("decode_buffer (misaligned)", views, &set.expected);
}

#[test]
fn python_save_then_rust_read_stream() {
    let set = python_set();
    let n = set.expected.len();

    let mut f = File::open(set.path("sample.ten")).expect("open sample.ten");
    let all = read_all(&mut f).expect("read_all");
    assert_eq!(all.len(), n, "read_all: number of tensors");
    for (i, (g, w)) in all.iter().zip(&set.expected).enumerate() {
        check_tensor(&format!("read_all: tensor {i}"), g, w);
    }

    // read(n) stops after n tensors and leaves the stream at the next one.
    let k = 10;
    let mut f = File::open(set.path("sample.ten")).expect("open sample.ten");
    let first = read(&mut f, k).expect("read first tensors");
    assert_eq!(first.len(), k, "read(stream, {k})");
    let rest = read(&mut f, usize::MAX).expect("read the rest");
    assert_eq!(rest.len(), n - k, "read after read(stream, {k})");
    for (i, (g, w)) in first.iter().chain(&rest).zip(&set.expected).enumerate() {
        check_tensor(&format!("read in two parts: tensor {i}"), g, w);
    }
    assert!(
        read_all(&mut f).expect("read at the end").is_empty(),
        "nothing is left to read"
    );
}

#[test]
fn python_encode_list_then_rust_decode_list() {
    let set = python_set();
    let frames = read_frames(&set.path("frames"));
    assert_eq!(frames.len(), 2 * set.expected.len(), "number of frames");
    check_views(
        "decode_list",
        decode_list(&frames).expect("decode_list"),
        &set.expected,
    );
}

#[test]
fn rust_encodes_python_arrays_byte_identically() {
    let set = python_set();
    let py_buffer = fs::read(set.path("buffer.bin")).expect("read buffer.bin");
    let py_file = fs::read(set.path("sample.ten")).expect("read sample.ten");
    // The reference's save and encode_buffer agree with each other.
    assert_same_bytes("python save vs python encode_buffer", &py_file, &py_buffer);

    // The Rust tensors are rebuilt from expected.json, not from Python's
    // bytes.
    let ours = encode_buffer(&set.expected).expect("encode_buffer");
    assert_same_bytes("encode_buffer", &ours, &py_buffer);

    let mut stream = Vec::new();
    write(&mut stream, &set.expected).expect("write");
    assert_same_bytes("write", &stream, &py_file);

    let path = set.path("rust.ten");
    save(&path, &set.expected).expect("save");
    assert_same_bytes("save", &fs::read(&path).expect("read rust.ten"), &py_file);

    let py_frames = read_frames(&set.path("frames"));
    let frames = encode_list(&set.expected);
    assert_eq!(
        frames.len(),
        py_frames.len(),
        "encode_list: number of frames"
    );
    for (i, (ours, theirs)) in frames.iter().zip(&py_frames).enumerate() {
        assert_same_bytes(&format!("encode_list frame {i}"), ours, theirs);
    }
}

// ---------------------------------------------------------------------------
// Rust's arrays.

const RUST_SHAPES: &[&[usize]] = &[
    &[1],
    &[7],
    &[3, 5],
    &[2, 3, 4],
    &[0],
    &[3, 0, 2],
    &[2, 1, 3, 1, 2, 1, 1, 2, 1],
];
const NAMES: &[&str] = &["", "a", "abcdefgh", "x_9", "a b.c-!?", "Z"];

/// Calls `f` with Rust's random arrays, as encoder inputs, and their
/// entries for expected.json: every reference dtype in several shapes (no
/// 0-d: the reference cannot decode it), and non-contiguous views
/// (transposed, stepped, reversed, permuted, a column) interleaved.
fn with_rust_arrays<R>(f: impl FnOnce(&[TensorRef<'_>], Vec<Entry>) -> R) -> R {
    let mut rng = XorShift::new(SEED);
    let mut owned = Vec::new();
    for d in reference_dtypes() {
        for shape in RUST_SHAPES {
            let name = NAMES[owned.len() % NAMES.len()];
            let t = with_dtype!(d, T => Tensor::new(name, random_array::<T>(&mut rng, shape)));
            owned.push(t.expect("valid name"));
        }
    }

    let f8 = random_array::<f64>(&mut rng, &[40, 50])
        .into_dimensionality::<Ix2>()
        .unwrap();
    let i2 = random_array::<i16>(&mut rng, &[6, 7, 8])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let u4 = random_array::<u32>(&mut rng, &[2, 3, 4, 5]);
    let h = random_array::<f16>(&mut rng, &[9, 11])
        .into_dimensionality::<Ix2>()
        .unwrap();
    let u8m = random_array::<u64>(&mut rng, &[5, 6])
        .into_dimensionality::<Ix2>()
        .unwrap();
    let i1 = random_array::<i8>(&mut rng, &[0, 4])
        .into_dimensionality::<Ix2>()
        .unwrap();

    // 16000 bytes: more than the encoder's 8 KiB gathering runs.
    let f8_t = f8.t();
    let i2_s = i2.slice(s![..;2, 1..6, ..;-3]);
    let u4_p = u4.view().permuted_axes(IxDyn(&[2, 0, 3, 1]));
    let h_ts = h.t().slice_move(s![1.., ..;2]);
    let u8_c = u8m.column(3);
    let i1_t = i1.t();
    for (name, contiguous) in [
        ("f8_t", f8_t.is_standard_layout()),
        ("i2_s", i2_s.is_standard_layout()),
        ("u4_p", u4_p.is_standard_layout()),
        ("h_ts", h_ts.is_standard_layout()),
        ("u8_c", u8_c.is_standard_layout()),
    ] {
        assert!(!contiguous, "{name} should be a non-contiguous view");
    }
    let strided = [
        (
            TensorRef::from_array("f8_t", &f8_t),
            entry_of("f8_t", &f8_t),
        ),
        (
            TensorRef::from_array("i2_s", &i2_s),
            entry_of("i2_s", &i2_s),
        ),
        (
            TensorRef::from_array("u4_p", &u4_p),
            entry_of("u4_p", &u4_p),
        ),
        (
            TensorRef::from_array("h_ts", &h_ts),
            entry_of("h_ts", &h_ts),
        ),
        (
            TensorRef::from_array("u8_c", &u8_c),
            entry_of("u8_c", &u8_c),
        ),
        (TensorRef::from_array("", &i1_t), entry_of("", &i1_t)),
    ];

    let mut refs: Vec<TensorRef<'_>> = owned.iter().map(|t| t.view().into()).collect();
    let mut entries: Vec<Entry> = owned.iter().map(entry_of_tensor).collect();
    for (k, (r, e)) in strided.into_iter().enumerate() {
        let at = 3 + 13 * k;
        refs.insert(at, r.expect("valid name"));
        entries.insert(at, e);
    }
    f(&refs, entries)
}

#[test]
fn rust_writes_python_reads() {
    with_rust_arrays(|refs, entries| {
        let n = refs.len();
        assert_eq!(entries.len(), n);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();

        save(d.join("rust.ten"), refs).expect("save");
        let buffer = encode_buffer(refs).expect("encode_buffer");
        fs::write(d.join("buffer.bin"), &buffer).expect("write buffer.bin");
        let mut stream =
            BufWriter::new(File::create(d.join("stream.bin")).expect("create stream.bin"));
        write(&mut stream, refs).expect("write");
        stream
            .into_inner()
            .expect("flush stream.bin")
            .sync_all()
            .expect("sync");
        write_frames(&d.join("frames"), &encode_list(refs));
        write_manifest(&d.join("expected.json"), entries);

        let out = run_py("py_read.py", [d]);
        for form in ["load", "decode_buffer", "read", "decode_list"] {
            let line = format!("ok {form} {n}");
            assert!(
                out.lines().any(|l| l == line),
                "py_read.py did not report {line:?}; its output:\n{out}"
            );
        }
    });
}

#[test]
fn python_encodes_rust_arrays_byte_identically() {
    with_rust_arrays(|refs, entries| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_manifest(&d.join("expected.json"), entries);
        let out = run_py("py_encode.py", [d]);
        assert_eq!(out.trim(), format!("encoded {}", refs.len()));

        let ours = encode_buffer(refs).expect("encode_buffer");
        assert_same_bytes(
            "encode_buffer",
            &ours,
            &fs::read(d.join("py_buffer.bin")).unwrap(),
        );
        assert_same_bytes(
            "encode_buffer vs python save",
            &ours,
            &fs::read(d.join("py.ten")).unwrap(),
        );

        let py_frames = read_frames(&d.join("py_frames"));
        let frames = encode_list(refs);
        assert_eq!(
            frames.len(),
            py_frames.len(),
            "encode_list: number of frames"
        );
        for (i, (ours, theirs)) in frames.iter().zip(&py_frames).enumerate() {
            assert_same_bytes(&format!("encode_list frame {i}"), ours, theirs);
        }
    });
}

#[test]
fn zero_d_arrays_encode_exactly_as_python_does() {
    // A 0-d array of each reference dtype, from ndarray's fixed-dimension
    // `Array0`. The reference can encode these (it cannot decode them).
    let mut rng = XorShift::new(SEED ^ 0xD0);
    let dtypes = reference_dtypes();
    let scalars: Vec<Tensor> = dtypes
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let name = NAMES[i % NAMES.len()];
            with_dtype!(d, T => Tensor::new(name, arr0(T::random(&mut rng)).into_dyn()))
                .expect("valid name")
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_manifest(
        &d.join("expected.json"),
        scalars.iter().map(entry_of_tensor).collect(),
    );
    let out = run_py("py_encode.py", [d]);
    assert_eq!(out.trim(), format!("encoded {}", scalars.len()));
    let py_buffer = fs::read(d.join("py_buffer.bin")).unwrap();

    // The whole list, then each array on its own from raw parts.
    assert_same_bytes(
        "0-d encode_buffer",
        &encode_buffer(&scalars).unwrap(),
        &py_buffer,
    );
    assert_eq!(
        py_buffer.len(),
        160 * scalars.len(),
        "two 80-byte chunks per 0-d array"
    );
    for (i, t) in scalars.iter().enumerate() {
        let one = &py_buffer[160 * i..160 * (i + 1)];
        let raw = TensorRef::raw(t.name(), t.dtype(), &[], t.view().data()).expect("raw 0-d");
        assert_same_bytes(
            &format!("0-d {} alone", t.dtype()),
            &encode_buffer(&[raw]).unwrap(),
            one,
        );
        // Header: 24-byte payload of dtype code, name, ndim 0; data: one item.
        assert_eq!(&one[..8], b"~TenBin~");
        assert_eq!(one[8..16], 24u64.to_le_bytes());
        assert_eq!(
            &one[16..24],
            format!("{:\0<8}", t.dtype().code()).as_bytes()
        );
        assert_eq!(&one[24..32], format!("{:\0<8}", t.name()).as_bytes());
        assert_eq!(one[32..40], 0u64.to_le_bytes());
        assert_eq!(one[88..96], (t.dtype().itemsize() as u64).to_le_bytes());
    }
    // Rust decodes Python's 0-d encodings to the same scalars.
    check_views(
        "0-d decode_buffer of python bytes",
        decode_buffer(&py_buffer).unwrap(),
        &scalars,
    );

    let py_frames = read_frames(&d.join("py_frames"));
    let frames = encode_list(&scalars);
    assert_eq!(
        frames.len(),
        py_frames.len(),
        "0-d encode_list: number of frames"
    );
    for (i, (ours, theirs)) in frames.iter().zip(&py_frames).enumerate() {
        assert_same_bytes(&format!("0-d encode_list frame {i}"), ours, theirs);
    }
    let frame_views = decode_list(&py_frames).unwrap();
    check_views("0-d decode_list of python frames", frame_views, &scalars);
}

/// The Python scripts check with explicit `raise`s: a bare `assert`
/// vanishes under `PYTHONOPTIMIZE` (or `python -O`), and with it the check
/// (or, for `assert txn.put(...)`, the write itself).
#[test]
fn tests_py_scripts_do_not_rely_on_assert() {
    let dir = common::manifest_dir().join("tests").join("py");
    let mut scripts = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        scripts += 1;
        let text = fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            assert!(
                !(code.starts_with("assert ") || code.starts_with("assert(")),
                "{}:{}: a bare assert: {code}",
                path.display(),
                n + 1
            );
        }
    }
    assert!(scripts >= 10, "only {scripts} scripts in {}", dir.display());
}
