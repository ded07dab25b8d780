//! Tensors over ZeroMQ: `zsend_single` / `zrecv_single` (one frame, the
//! tenbin buffer) and `zsend_multipart` / `zrecv_multipart` (header and data
//! frames, tensorcom style).
//!
//! - Python (pyzmq with the reference `webdataset.tenbin`,
//!   `tests/py/zmq_peer.py`) on the other end, both directions, over tcp on
//!   127.0.0.1 and over ipc://, single frame (`tenbin.encode_buffer` /
//!   `decode_buffer`) and multipart (`tenbin.encode_list` / `decode_list`):
//!   three messages each way, the first with a 4 MiB float32 array, every
//!   reference dtype, every element compared bit for bit (NaN patterns
//!   included).
//! - Rust to Rust over inproc://: every dtype (the extensions too), 0-d,
//!   empty and unnamed arrays, an empty list.
//! - Errors, not panics: a single-frame receive of a multipart message (and
//!   the next message still arrives whole), garbage bytes, odd frame counts,
//!   truncated buffers, a non-blocking receive with nothing there.
//!
//! The arrays both languages make: message seed `s`, array `k`, element `i`
//! holds the low bytes of `splitmix64(((s << 32) ^ (k << 24)) + i)`.

mod common;

use std::fmt::Debug;
use std::thread::JoinHandle;

use bytemuck::Pod;
use tenstore::half::{bf16, f16};
use tenstore::net::{zrecv_multipart, zrecv_single, zsend_multipart, zsend_single, NetError};
use tenstore::num_complex::Complex;
use tenstore::{encode_buffer, DType, Element, TensorRef, TensorView};

const TIMEOUT_MS: i32 = 20_000;

/// (dtype, shape) of the arrays of a message; names are `t0`, `t1`, ...
/// (the same table is in `tests/py/zmq_peer.py`).
const TABLE: [(DType, &[usize]); 12] = [
    (DType::F16, &[3, 5]),
    (DType::F32, &[17]),
    (DType::F64, &[2, 3]),
    (DType::I8, &[4, 4, 4]),
    (DType::I16, &[31]),
    (DType::I32, &[2, 2, 2, 2]),
    (DType::I64, &[5]),
    (DType::U8, &[3, 64, 64]),
    (DType::U16, &[8]),
    (DType::U32, &[6]),
    (DType::U64, &[2, 7]),
    (DType::F32, &[0]),
];

/// The 4 MiB array that messages with a seed divisible by 1000 carry last.
const BIG: (DType, &[usize]) = (DType::F32, &[1024, 1024]);

/// One expected array.
struct Spec {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Spec {
    fn tensor_ref(&self) -> TensorRef<'_> {
        TensorRef::raw(&self.name, self.dtype, &self.shape, &self.bytes).unwrap()
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn array_bytes(seed: u64, k: usize, dtype: DType, shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let size = dtype.itemsize();
    let base = (seed << 32) ^ ((k as u64) << 24);
    let mut out = Vec::with_capacity(n * size);
    for i in 0..n as u64 {
        let bits = splitmix(base.wrapping_add(i)).to_le_bytes();
        match dtype {
            // Only 0 and 1 are bools.
            DType::Bool => out.push(bits[0] & 1),
            // Two independent halves for the wide complex type.
            DType::C128 => {
                out.extend_from_slice(&bits);
                out.extend_from_slice(&splitmix(!base.wrapping_add(i)).to_le_bytes());
            }
            _ => out.extend_from_slice(&bits[..size]),
        }
    }
    out
}

/// The arrays of message `seed` (as `zmq_peer.py` makes them).
fn message(seed: u64) -> Vec<Spec> {
    let mut table = TABLE.to_vec();
    if seed.is_multiple_of(1000) {
        table.push(BIG);
    }
    table
        .into_iter()
        .enumerate()
        .map(|(k, (dtype, shape))| Spec {
            name: format!("t{k}"),
            dtype,
            shape: shape.to_vec(),
            bytes: array_bytes(seed, k, dtype, shape),
        })
        .collect()
}

/// Compares every element of `view` with the little-endian `want` bytes,
/// as values of `T` (bit for bit: NaN payloads count).
fn same_elements<T: Element + Pod + Debug>(what: &str, view: &TensorView<'_>, want: &[u8]) {
    let got: Vec<T> = view.to_vec::<T>().unwrap();
    let want: Vec<T> = want
        .chunks_exact(std::mem::size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: element count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            bytemuck::bytes_of(g) == bytemuck::bytes_of(w),
            "{what}: element {i} is {g:?}, expected {w:?}"
        );
    }
    // The zero-copy path agrees with the copy when it applies (multipart
    // frames received over tcp or ipc often sit at odd addresses in
    // libzmq's receive buffer); cow_array works either way.
    if view.is_aligned() || view.data().is_empty() {
        let direct = view.as_slice::<T>().unwrap();
        assert_eq!(bytemuck::cast_slice::<T, u8>(direct), view.data());
    } else {
        assert!(matches!(
            view.as_slice::<T>(),
            Err(tenstore::Error::Misaligned { .. })
        ));
    }
    let cow = view.cow_array::<T>().unwrap();
    assert_eq!(cow.len(), got.len(), "{what}: cow_array length");
    for (i, (c, g)) in cow.iter().zip(&got).enumerate() {
        assert!(
            bytemuck::bytes_of(c) == bytemuck::bytes_of(g),
            "{what}: cow_array element {i}"
        );
    }
}

/// Checks a received tensor against its spec: name, dtype, shape, values.
fn check_view(what: &str, view: &TensorView<'_>, spec: &Spec) {
    assert_eq!(view.name(), spec.name, "{what}: name");
    assert_eq!(view.dtype(), spec.dtype, "{what}: dtype");
    assert_eq!(view.shape().to_vec(), spec.shape, "{what}: shape");
    let want = &spec.bytes[..];
    match spec.dtype {
        DType::F16 => same_elements::<f16>(what, view, want),
        DType::F32 => same_elements::<f32>(what, view, want),
        DType::F64 => same_elements::<f64>(what, view, want),
        DType::I8 => same_elements::<i8>(what, view, want),
        DType::I16 => same_elements::<i16>(what, view, want),
        DType::I32 => same_elements::<i32>(what, view, want),
        DType::I64 => same_elements::<i64>(what, view, want),
        DType::U8 => same_elements::<u8>(what, view, want),
        DType::U16 => same_elements::<u16>(what, view, want),
        DType::U32 => same_elements::<u32>(what, view, want),
        DType::U64 => same_elements::<u64>(what, view, want),
        DType::BF16 => same_elements::<bf16>(what, view, want),
        DType::C64 => same_elements::<Complex<f32>>(what, view, want),
        DType::C128 => same_elements::<Complex<f64>>(what, view, want),
        DType::Bool => {
            let got = view.to_vec::<bool>().unwrap();
            assert_eq!(got.len(), want.len(), "{what}: element count");
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g, w == 1, "{what}: element {i}");
            }
        }
        other => panic!("no comparison for dtype {other:?}"),
    }
}

fn check_views<'a>(what: &str, views: impl Iterator<Item = TensorView<'a>>, want: &[Spec]) {
    let views: Vec<_> = views.collect();
    assert_eq!(views.len(), want.len(), "{what}: number of tensors");
    for (k, (v, s)) in views.iter().zip(want).enumerate() {
        check_view(&format!("{what} tensor {k}"), v, s);
    }
}

// ---------------------------------------------------------------------------
// Sockets and the Python peer.

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Ipc,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Single,
    Multipart,
}

impl Framing {
    fn arg(self) -> &'static str {
        match self {
            Framing::Single => "single",
            Framing::Multipart => "multipart",
        }
    }
}

/// A bound socket of `kind` and the endpoint a peer connects to; the
/// tempdir holds the ipc socket file.
fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    transport: Transport,
) -> (zmq::Socket, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(TIMEOUT_MS).unwrap();
    socket.set_rcvtimeo(TIMEOUT_MS).unwrap();
    socket.set_sndtimeo(TIMEOUT_MS).unwrap();
    let addr = match transport {
        Transport::Tcp => "tcp://127.0.0.1:*".to_string(),
        Transport::Ipc => format!("ipc://{}", dir.path().join("peer.sock").display()),
    };
    socket.bind(&addr).unwrap();
    let endpoint = socket.get_last_endpoint().unwrap().unwrap();
    (socket, endpoint, dir)
}

/// Runs `zmq_peer.py ARGS` on a thread; its stdout comes back on join.
fn python_peer(args: Vec<String>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        common::run_py_timeout("zmq_peer.py", &args, std::time::Duration::from_secs(60))
    })
}

/// Joins the Python thread first (its failure explains ours best), then
/// unwraps our own result.
fn finish<T, E: Debug>(py: JoinHandle<String>, ours: Result<T, E>) -> (String, T) {
    let out = match py.join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    (out, ours.expect("the Rust end failed"))
}

const COUNT: u64 = 3;

fn python_to_rust(transport: Transport, framing: Framing, seed: u64) {
    let ctx = zmq::Context::new();
    let (socket, endpoint, _dir) = bind(&ctx, zmq::PULL, transport);
    let py = python_peer(vec![
        "send".into(),
        endpoint,
        framing.arg().into(),
        seed.to_string(),
        COUNT.to_string(),
    ]);
    let received: Result<Vec<_>, NetError> = (0..COUNT)
        .map(|m| {
            let what = format!("{transport:?} {framing:?} message {m}");
            let want = message(seed + m);
            match framing {
                Framing::Single => {
                    let buf = zrecv_single(&socket, 0)?;
                    check_views(&what, buf.tensors().iter(), &want);
                    Ok(buf.as_bytes().len())
                }
                Framing::Multipart => {
                    let frames = zrecv_multipart(&socket, 0)?;
                    check_views(&what, frames.iter(), &want);
                    Ok(frames.iter().map(|v| v.nbytes()).sum())
                }
            }
        })
        .collect();
    let (out, sizes) = finish(py, received);
    assert!(out.starts_with("ok 3 "), "python: {out}");
    // The first message carries the 4 MiB array.
    assert!(sizes[0] > 4 << 20, "first message only {} bytes", sizes[0]);
}

fn rust_to_python(transport: Transport, framing: Framing, seed: u64) {
    let ctx = zmq::Context::new();
    let (socket, endpoint, _dir) = bind(&ctx, zmq::PUSH, transport);
    let py = python_peer(vec![
        "recv".into(),
        endpoint,
        framing.arg().into(),
        seed.to_string(),
        COUNT.to_string(),
    ]);
    let sent: Result<(), NetError> = (0..COUNT).try_for_each(|m| {
        let specs = message(seed + m);
        let refs: Vec<TensorRef<'_>> = specs.iter().map(Spec::tensor_ref).collect();
        match framing {
            Framing::Single => zsend_single(&socket, &refs, 0),
            Framing::Multipart => zsend_multipart(&socket, &refs, 0),
        }
    });
    let (out, ()) = finish(py, sent);
    let total: usize = (0..COUNT)
        .map(|m| {
            message(seed + m)
                .iter()
                .map(|s| s.bytes.len())
                .sum::<usize>()
        })
        .sum();
    let tensors: usize = (0..COUNT).map(|m| message(seed + m).len()).sum();
    assert_eq!(out.trim(), format!("ok {COUNT} {tensors} {total}"));
}

#[test]
fn python_sends_single_frames_over_tcp() {
    python_to_rust(Transport::Tcp, Framing::Single, 1000);
}

#[test]
fn python_sends_multipart_over_tcp() {
    python_to_rust(Transport::Tcp, Framing::Multipart, 2000);
}

#[test]
fn python_sends_single_frames_over_ipc() {
    python_to_rust(Transport::Ipc, Framing::Single, 3000);
}

#[test]
fn python_sends_multipart_over_ipc() {
    python_to_rust(Transport::Ipc, Framing::Multipart, 4000);
}

#[test]
fn rust_sends_single_frames_over_tcp() {
    rust_to_python(Transport::Tcp, Framing::Single, 5000);
}

#[test]
fn rust_sends_multipart_over_tcp() {
    rust_to_python(Transport::Tcp, Framing::Multipart, 6000);
}

#[test]
fn rust_sends_single_frames_over_ipc() {
    rust_to_python(Transport::Ipc, Framing::Single, 7000);
}

#[test]
fn rust_sends_multipart_over_ipc() {
    rust_to_python(Transport::Ipc, Framing::Multipart, 8000);
}

#[test]
fn the_generator_matches_the_python_one() {
    // Pinned first elements (printed by zmq_peer.py's `expected(1000)`), so
    // that a drift of either generator shows here, not as a puzzling
    // mismatch across processes.
    let m = message(1000);
    assert_eq!(m.len(), 13);
    let first = |k: usize| splitmix((1000u64 << 32) ^ ((k as u64) << 24));
    assert_eq!(m[3].bytes[0] as i8, -26);
    assert_eq!(m[3].bytes[0], first(3) as u8);
    assert_eq!(m[7].bytes[..2], [19, 230]);
    assert_eq!(
        i64::from_le_bytes(m[6].bytes[..8].try_into().unwrap()),
        -4454271401100975075
    );
    assert_eq!(
        u64::from_le_bytes(m[10].bytes[..8].try_into().unwrap()),
        3626076270425563114
    );
    assert_eq!(m[12].bytes.len(), 4 << 20);
    assert!(m[11].bytes.is_empty());
}

// ---------------------------------------------------------------------------
// Rust to Rust over inproc.

/// A connected PAIR over inproc.
fn pair(ctx: &zmq::Context, name: &str) -> (zmq::Socket, zmq::Socket) {
    let a = ctx.socket(zmq::PAIR).unwrap();
    let b = ctx.socket(zmq::PAIR).unwrap();
    for s in [&a, &b] {
        s.set_rcvtimeo(TIMEOUT_MS).unwrap();
        s.set_sndtimeo(TIMEOUT_MS).unwrap();
        s.set_linger(0).unwrap();
    }
    a.bind(&format!("inproc://{name}")).unwrap();
    b.connect(&format!("inproc://{name}")).unwrap();
    (a, b)
}

/// Every dtype, a 0-d array, an empty one, an unnamed one, an 8-byte name.
fn every_kind(seed: u64) -> Vec<Spec> {
    let mut specs: Vec<Spec> = DType::ALL
        .into_iter()
        .enumerate()
        .map(|(k, dtype)| {
            let shape = vec![2, k + 1, 3];
            Spec {
                name: format!("d{}", dtype.code()),
                dtype,
                bytes: array_bytes(seed, k, dtype, &shape),
                shape,
            }
        })
        .collect();
    let extra: [(&str, DType, Vec<usize>); 4] = [
        ("scalar", DType::F64, vec![]),
        ("empty", DType::I32, vec![4, 0, 2]),
        ("", DType::U16, vec![5]),
        (
            "eightchr",
            DType::C64,
            vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3],
        ),
    ];
    for (k, (name, dtype, shape)) in extra.into_iter().enumerate() {
        specs.push(Spec {
            name: name.into(),
            dtype,
            bytes: array_bytes(seed, 100 + k, dtype, &shape),
            shape,
        });
    }
    specs
}

#[test]
fn rust_to_rust_over_inproc_every_dtype_both_framings() {
    let ctx = zmq::Context::new();
    let (a, b) = pair(&ctx, "net-zmq-every-dtype");
    for (round, seed) in [11u64, 12, 13].into_iter().enumerate() {
        let specs = every_kind(seed);
        let refs: Vec<TensorRef<'_>> = specs.iter().map(Spec::tensor_ref).collect();

        zsend_single(&a, &refs, 0).unwrap();
        let buf = zrecv_single(&b, 0).unwrap();
        assert_eq!(buf.as_bytes(), &encode_buffer(&refs).unwrap()[..]);
        check_views(
            &format!("single round {round}"),
            buf.tensors().iter(),
            &specs,
        );

        zsend_multipart(&a, &refs, 0).unwrap();
        let frames = zrecv_multipart(&b, 0).unwrap();
        assert_eq!(frames.len(), specs.len());
        check_views(&format!("multipart round {round}"), frames.iter(), &specs);

        // And back the other way: PAIR is symmetric.
        zsend_multipart(&b, &refs, zmq::DONTWAIT).unwrap();
        let frames = zrecv_multipart(&a, 0).unwrap();
        check_views(&format!("multipart back {round}"), frames.iter(), &specs);
    }
    // A 4 MiB array over inproc too.
    let big = message(9000);
    let refs: Vec<TensorRef<'_>> = big.iter().map(Spec::tensor_ref).collect();
    zsend_single(&a, &refs, 0).unwrap();
    check_views(
        "big single",
        zrecv_single(&b, 0).unwrap().tensors().iter(),
        &big,
    );
    zsend_multipart(&a, &refs, 0).unwrap();
    check_views(
        "big multipart",
        zrecv_multipart(&b, 0).unwrap().iter(),
        &big,
    );
}

#[test]
fn an_empty_list_round_trips_both_ways() {
    let ctx = zmq::Context::new();
    let (a, b) = pair(&ctx, "net-zmq-empty");
    let none: [TensorRef<'_>; 0] = [];
    zsend_single(&a, &none, 0).unwrap();
    let buf = zrecv_single(&b, 0).unwrap();
    assert!(buf.is_empty());
    assert!(buf.as_bytes().is_empty());
    zsend_multipart(&a, &none, 0).unwrap();
    let frames = zrecv_multipart(&b, 0).unwrap();
    assert!(frames.is_empty());
    assert_eq!(frames.len(), 0);
    assert!(frames.get(0).is_none());
}

// ---------------------------------------------------------------------------
// Errors, not panics.

fn is_codec(e: &NetError) -> bool {
    matches!(e, NetError::Codec(_))
}

#[test]
fn a_single_frame_receive_of_a_multipart_message_is_an_error_and_the_next_message_is_whole() {
    let ctx = zmq::Context::new();
    let (a, b) = pair(&ctx, "net-zmq-wrong-framing");
    let specs = every_kind(21);
    let refs: Vec<TensorRef<'_>> = specs.iter().map(Spec::tensor_ref).collect();
    zsend_multipart(&a, &refs, 0).unwrap();
    zsend_single(&a, &refs, 0).unwrap();
    let err = match zrecv_single(&b, 0) {
        Err(e) => e,
        Ok(buf) => panic!("a multipart message read as one frame: {buf:?}"),
    };
    assert!(matches!(err, NetError::Protocol(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("single-frame") && text.contains("multipart"),
        "unclear message: {text}"
    );
    // The rest of the multipart message was drained: the next receive gets
    // the single-frame message, whole.
    let buf = zrecv_single(&b, 0).unwrap();
    check_views("after the refused one", buf.tensors().iter(), &specs);
    assert!(!b.get_rcvmore().unwrap());
}

#[test]
fn garbage_and_malformed_frames_are_errors() {
    let ctx = zmq::Context::new();
    let (a, b) = pair(&ctx, "net-zmq-garbage");
    let mut rng = common::XorShift::new(77);
    let good = encode_buffer(
        &every_kind(31)
            .iter()
            .map(Spec::tensor_ref)
            .collect::<Vec<_>>(),
    )
    .unwrap();

    // Single frame: random bytes of many lengths, a truncated buffer, a
    // buffer with trailing junk, a corrupted magic.
    let mut bad: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            (0..(i * 37 % 300 + 1))
                .map(|_| rng.next_u64() as u8)
                .collect()
        })
        .collect();
    bad.push(good[..good.len() - 1].to_vec());
    bad.push(good[..good.len() / 2].to_vec());
    bad.push(good[..20].to_vec());
    let mut junk = good.clone();
    junk.extend_from_slice(b"junk");
    bad.push(junk);
    let mut magic = good.clone();
    magic[0] ^= 0xFF;
    bad.push(magic);
    for (i, frame) in bad.iter().enumerate() {
        a.send(&frame[..], 0).unwrap();
        match zrecv_single(&b, 0) {
            Err(e) => assert!(is_codec(&e), "frame {i}: {e:?}"),
            Ok(buf) => panic!("frame {i} of garbage decoded: {buf:?}"),
        }
    }

    // Multipart: garbage pairs, an odd number of frames, a whole buffer as
    // one frame, a header without its data, data not matching the header.
    let frames = tenstore::encode_list(
        &every_kind(32)
            .iter()
            .map(Spec::tensor_ref)
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|f| f.into_owned())
    .collect::<Vec<_>>();
    let mut cases: Vec<Vec<Vec<u8>>> = vec![
        vec![b"garbage!".to_vec(), b"more garbage".to_vec()],
        vec![vec![0; 64], vec![0; 64]],
        vec![good.clone()],
        frames[..3].to_vec(),
        vec![frames[0].clone(), frames[3].clone()],
        vec![frames[0].clone(), frames[1][..frames[1].len() - 1].to_vec()],
    ];
    let mut swapped = frames.clone();
    swapped.swap(0, 1);
    cases.push(swapped);
    for (i, case) in cases.iter().enumerate() {
        a.send_multipart(case, 0).unwrap();
        match zrecv_multipart(&b, 0) {
            Err(e) => assert!(is_codec(&e), "case {i}: {e:?}"),
            Ok(f) => panic!(
                "malformed multipart case {i} decoded to {} tensors",
                f.len()
            ),
        }
    }

    // After all that, good messages still arrive whole.
    let specs = every_kind(33);
    let refs: Vec<TensorRef<'_>> = specs.iter().map(Spec::tensor_ref).collect();
    zsend_multipart(&a, &refs, 0).unwrap();
    check_views(
        "after garbage",
        zrecv_multipart(&b, 0).unwrap().iter(),
        &specs,
    );
    zsend_single(&a, &refs, 0).unwrap();
    check_views(
        "after garbage",
        zrecv_single(&b, 0).unwrap().tensors().iter(),
        &specs,
    );
}

#[test]
fn a_nonblocking_receive_with_nothing_there_is_a_zmq_error() {
    let ctx = zmq::Context::new();
    let (_a, b) = pair(&ctx, "net-zmq-eagain");
    match zrecv_single(&b, zmq::DONTWAIT) {
        Err(NetError::Zmq { source, .. }) => assert_eq!(source, zmq::Error::EAGAIN),
        other => panic!("expected EAGAIN, got {:?}", other.map(|b| b.len())),
    }
    match zrecv_multipart(&b, zmq::DONTWAIT) {
        Err(NetError::Zmq { source, .. }) => assert_eq!(source, zmq::Error::EAGAIN),
        other => panic!("expected EAGAIN, got {:?}", other.map(|f| f.len())),
    }
}
