//! Criterion benchmarks of the tenbin codec, each figure beside its peer in
//! the same group (and so the same run):
//!
//! - `decode`: `Tensors::parse`, `decode_buffer`, parse + `array::<f32>()`
//!   and parse + `as_slice::<f32>()` of a buffer holding one f32 tensor of 1 KiB or of 16 MiB, beside
//!   safetensors' `SafeTensors::deserialize` (+ `tensor()` and an
//!   `ArrayViewD`) of the same tensor. Decoding should cost the same at
//!   both sizes.
//! - `encode_64MiB`: `encode_into` a preallocated buffer of `encoded_len`
//!   bytes beside a plain `copy_from_slice` of the same 64 MiB; the
//!   allocating `encode_buffer` beside `to_vec` and `safetensors::serialize`;
//!   `encode_into` of the transposed array (the strided path) beside
//!   ndarray's `assign` of it into a preallocated array.
//! - `save_256MiB`: `save` of one 256 MiB f32 tensor beside
//!   `File::create` + `write_all` of the same bytes.
//! - `sample_3`: a 3-tensor training sample (u1 3x64x64 "image", f4 [10]
//!   "logits", i8 [1] "label"): parse + access of all three views, encoding,
//!   beside safetensors.
//!
//! Run with `cargo bench --bench codec`; `vs_python` compares with the
//! Python reference.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use ndarray::{Array1, Array2, Array3, ArrayViewD, IxDyn};
use safetensors::tensor::TensorView as StView;
use safetensors::{Dtype as StDtype, SafeTensors};
use tenstore::{decode_buffer, encode_buffer, encode_into, encoded_len, save, TensorRef, Tensors};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// `n` f32 values, not all alike.
fn f32_data(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 * 0.5).collect()
}

/// The tenbin and safetensors encodings of one f32 tensor named "x" of
/// `nbytes` bytes.
fn single_f32(nbytes: usize) -> (Vec<u8>, Vec<u8>) {
    let a = Array1::from(f32_data(nbytes / 4));
    let ten = encode_buffer(&[TensorRef::from_array("x", &a).unwrap()]).unwrap();
    let view = StView::new(
        StDtype::F32,
        a.shape().to_vec(),
        bytemuck::cast_slice(a.as_slice().unwrap()),
    )
    .unwrap();
    let st = safetensors::serialize([("x", view)], &None).unwrap();
    (ten, st)
}

/// The zero-copy view of the f32 tensor `name` of a safetensors buffer:
/// what `array::<f32>()` gives on the tenstore side.
fn st_array<'a>(st: &SafeTensors<'a>, name: &str) -> ArrayViewD<'a, f32> {
    let t = st.tensor(name).unwrap();
    let data: &'a [u8] = t.data();
    let shape = safetensors::View::shape(&t).to_vec();
    ArrayViewD::from_shape(IxDyn(&shape), bytemuck::cast_slice(data)).unwrap()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (label, nbytes) in [("1KiB", KIB), ("16MiB", 16 * MIB)] {
        let (ten, st) = single_f32(nbytes);
        let ten = ten.as_slice();
        let st = st.as_slice();
        g.bench_with_input(BenchmarkId::new("tenstore_parse", label), ten, |b, buf| {
            b.iter(|| Tensors::parse(black_box(buf)).unwrap().len())
        });
        g.bench_with_input(
            BenchmarkId::new("tenstore_decode_buffer", label),
            ten,
            |b, buf| b.iter(|| decode_buffer(black_box(buf)).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("tenstore_parse_array", label),
            ten,
            |b, buf| {
                b.iter(|| {
                    let ts = Tensors::parse(black_box(buf)).unwrap();
                    let a = ts.get(0).unwrap().array::<f32>().unwrap();
                    black_box(a[[nbytes / 4 - 1]])
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("tenstore_parse_as_slice", label),
            ten,
            |b, buf| {
                b.iter(|| {
                    let ts = Tensors::parse(black_box(buf)).unwrap();
                    let x = ts.get(0).unwrap().as_slice::<f32>().unwrap();
                    black_box(x[nbytes / 4 - 1])
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("safetensors_deserialize", label),
            st,
            |b, buf| b.iter(|| SafeTensors::deserialize(black_box(buf)).unwrap().len()),
        );
        g.bench_with_input(
            BenchmarkId::new("safetensors_deserialize_array", label),
            st,
            |b, buf| {
                b.iter(|| {
                    let st = SafeTensors::deserialize(black_box(buf)).unwrap();
                    let a = st_array(&st, "x");
                    black_box(a[[nbytes / 4 - 1]])
                })
            },
        );
    }
    g.finish();
}

fn encode_64mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_64MiB");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(64 * MIB as u64));
    let a = Array2::from_shape_vec((4096, 4096), f32_data(16 * MIB)).unwrap();
    let src: &[u8] = bytemuck::cast_slice(a.as_slice().unwrap());
    let tensors = [TensorRef::from_array("x", &a).unwrap()];

    let mut out = vec![0u8; encoded_len(&tensors).unwrap()];
    g.bench_function("tenstore_encode_into", |b| {
        b.iter(|| encode_into(black_box(&tensors), black_box(&mut out)).unwrap())
    });
    let mut dst = vec![0u8; src.len()];
    g.bench_function("memcpy", |b| {
        b.iter(|| black_box(&mut dst).copy_from_slice(black_box(src)))
    });

    // A transposed (non-contiguous) array: encoded from its strides, beside
    // ndarray's own strided copy into a preallocated array.
    let at = a.t();
    let transposed = [TensorRef::from_array("x", &at).unwrap()];
    g.bench_function("tenstore_encode_into_transposed", |b| {
        b.iter(|| encode_into(black_box(&transposed), black_box(&mut out)).unwrap())
    });
    let mut dst2 = Array2::<f32>::zeros((4096, 4096));
    g.bench_function("ndarray_assign_transposed", |b| {
        b.iter(|| black_box(&mut dst2).assign(black_box(&at)))
    });
    drop((out, dst, dst2));

    g.bench_function("tenstore_encode_buffer", |b| {
        b.iter(|| encode_buffer(black_box(&tensors)).unwrap())
    });
    g.bench_function("vec_to_vec", |b| b.iter(|| black_box(src).to_vec()));
    g.bench_function("safetensors_serialize", |b| {
        b.iter(|| {
            let view = StView::new(StDtype::F32, vec![4096, 4096], black_box(src)).unwrap();
            safetensors::serialize([("x", view)], &None).unwrap()
        })
    });
    g.finish();
}

fn save_256mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("save_256MiB");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Bytes(256 * MIB as u64));
    let a = Array1::from(f32_data(64 * MIB));
    let src: &[u8] = bytemuck::cast_slice(a.as_slice().unwrap());
    let tensors = [TensorRef::from_array("x", &a).unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let ten_path = dir.path().join("bench.ten");
    let raw_path = dir.path().join("bench.raw");

    g.bench_function("tenstore_save", |b| {
        b.iter(|| save(&ten_path, black_box(&tensors)).unwrap())
    });
    g.bench_function("write_all", |b| {
        b.iter(|| {
            let mut f = File::create(&raw_path).unwrap();
            f.write_all(black_box(src)).unwrap();
        })
    });
    g.finish();
}

/// The 3-tensor sample, as owned arrays.
struct Sample {
    image: Array3<u8>,
    logits: Array1<f32>,
    label: Array1<i64>,
}

impl Sample {
    fn new() -> Self {
        Sample {
            image: Array3::from_shape_fn((3, 64, 64), |(c, y, x)| (c * 7 + y * 3 + x) as u8),
            logits: Array1::from(f32_data(10)),
            label: Array1::from(vec![7i64]),
        }
    }

    fn refs(&self) -> [TensorRef<'_>; 3] {
        [
            TensorRef::from_array("image", &self.image).unwrap(),
            TensorRef::from_array("logits", &self.logits).unwrap(),
            TensorRef::from_array("label", &self.label).unwrap(),
        ]
    }

    fn safetensors(&self) -> Vec<u8> {
        let views = [
            (
                "image",
                StView::new(StDtype::U8, vec![3, 64, 64], self.image.as_slice().unwrap()).unwrap(),
            ),
            (
                "logits",
                StView::new(
                    StDtype::F32,
                    vec![10],
                    bytemuck::cast_slice(self.logits.as_slice().unwrap()),
                )
                .unwrap(),
            ),
            (
                "label",
                StView::new(
                    StDtype::I64,
                    vec![1],
                    bytemuck::cast_slice(self.label.as_slice().unwrap()),
                )
                .unwrap(),
            ),
        ];
        safetensors::serialize(views, &None).unwrap()
    }
}

fn sample_3(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_3");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let sample = Sample::new();
    let tensors = sample.refs();
    let ten = encode_buffer(&tensors).unwrap();
    let st = sample.safetensors();
    g.throughput(Throughput::Bytes(ten.len() as u64));

    g.bench_function("tenstore_parse_iter_arrays", |b| {
        b.iter(|| {
            let ts = Tensors::parse(black_box(&ten)).unwrap();
            let mut it = ts.iter();
            let image = it.next().unwrap().array::<u8>().unwrap();
            let logits = it.next().unwrap().array::<f32>().unwrap();
            let label = it.next().unwrap().array::<i64>().unwrap();
            black_box((image[[2, 63, 63]], logits[[9]], label[[0]]))
        })
    });
    g.bench_function("tenstore_parse_iter_slices", |b| {
        b.iter(|| {
            let ts = Tensors::parse(black_box(&ten)).unwrap();
            let mut it = ts.iter();
            let image = it.next().unwrap().as_slice::<u8>().unwrap();
            let logits = it.next().unwrap().as_slice::<f32>().unwrap();
            let label = it.next().unwrap().as_slice::<i64>().unwrap();
            black_box((image[3 * 64 * 64 - 1], logits[9], label[0]))
        })
    });
    g.bench_function("tenstore_parse_get_by_name", |b| {
        b.iter(|| {
            let ts = Tensors::parse(black_box(&ten)).unwrap();
            let image = ts.get_by_name("image").unwrap().array::<u8>().unwrap();
            let logits = ts.get_by_name("logits").unwrap().array::<f32>().unwrap();
            let label = ts.get_by_name("label").unwrap().array::<i64>().unwrap();
            black_box((image[[2, 63, 63]], logits[[9]], label[[0]]))
        })
    });
    g.bench_function("tenstore_decode_buffer_arrays", |b| {
        b.iter(|| {
            let views = decode_buffer(black_box(&ten)).unwrap();
            let image = views[0].array::<u8>().unwrap();
            let logits = views[1].array::<f32>().unwrap();
            let label = views[2].array::<i64>().unwrap();
            black_box((image[[2, 63, 63]], logits[[9]], label[[0]]))
        })
    });
    g.bench_function("safetensors_deserialize_arrays", |b| {
        b.iter(|| {
            let st = SafeTensors::deserialize(black_box(&st)).unwrap();
            let t = st.tensor("image").unwrap();
            let image = ArrayViewD::from_shape(IxDyn(&[3, 64, 64]), t.data()).unwrap();
            let logits = st_array(&st, "logits");
            let t = st.tensor("label").unwrap();
            let label =
                ArrayViewD::<i64>::from_shape(IxDyn(&[1]), bytemuck::cast_slice(t.data())).unwrap();
            black_box((image[[2, 63, 63]], logits[[9]], label[[0]]))
        })
    });

    let mut out = vec![0u8; encoded_len(&tensors).unwrap()];
    g.bench_function("tenstore_encode_into", |b| {
        b.iter(|| encode_into(black_box(&tensors), black_box(&mut out)).unwrap())
    });
    g.bench_function("tenstore_encode_buffer", |b| {
        b.iter(|| encode_buffer(black_box(&tensors)).unwrap())
    });
    g.bench_function("safetensors_serialize", |b| {
        b.iter(|| black_box(&sample).safetensors())
    });
    g.finish();
}

criterion_group!(benches, decode, encode_64mib, save_256mib, sample_3);
criterion_main!(benches);
