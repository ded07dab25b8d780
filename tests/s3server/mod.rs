//! An S3 server for tests and benchmarks: s3s + s3s-fs serving a
//! directory on 127.0.0.1, in-process, with faults to inject.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "tenstore-test";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "tenstore-test-secret";
/// The bucket the server holds.
pub const BUCKET: &str = "bucket";

/// Faults the server injects, and what it counts.
#[derive(Default)]
pub struct Faults {
    /// Answer this many next requests with 503 Slow Down.
    pub fail_503: AtomicU64,
    /// Flip a byte in the body of this many next ranged GETs.
    pub corrupt_ranges: AtomicU64,
    /// Cut the connection half way through the body of this many next
    /// GETs of whole objects.
    pub cut_bodies: AtomicU64,
    /// Requests answered with 503.
    pub served_503: AtomicU64,
    /// Ranged GETs served.
    pub range_gets: AtomicU64,
    /// GETs of whole objects served.
    pub whole_gets: AtomicU64,
    /// Parts of multipart uploads received (`PUT ...?partNumber=N`).
    pub upload_parts: AtomicU64,
    /// Refuse every request by closing the connection.
    pub dead: AtomicBool,
}

/// A running server; dropping it stops it.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its faults and counters.
    pub faults: Arc<Faults>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Server {
    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The object_store settings that reach this server.
    pub fn s3_config(&self) -> Vec<(String, String)> {
        vec![
            ("aws_endpoint".into(), self.endpoint()),
            ("aws_allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), ACCESS_KEY.into()),
            ("aws_secret_access_key".into(), SECRET_KEY.into()),
            ("aws_region".into(), "us-east-1".into()),
        ]
    }

    /// The same, as environment variables for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Stops serving: the listener closes, so new connections are refused.
    pub fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts a server holding the bucket [`BUCKET`] in `root`.
pub fn start(root: &Path) -> Server {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    rt.spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            // Small requests would otherwise wait for delayed ACKs.
            let _ = socket.set_nodelay(true);
            let service = service.clone();
            let f = f.clone();
            tokio::spawn(async move {
                if f.dead.load(Ordering::SeqCst) {
                    return;
                }
                let handler = service_fn(move |req: http::Request<Incoming>| {
                    let service = service.clone();
                    let f = f.clone();
                    async move { handle(service, f, req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), handler)
                    .await;
            });
        }
    });
    Server {
        addr,
        faults,
        rt: Some(rt),
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn handle(
    service: s3s::service::S3Service,
    f: Arc<Faults>,
    req: http::Request<Incoming>,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    if take_one(&f.fail_503) {
        f.served_503.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>slow down</Message></Error>";
        return Ok(http::Response::builder()
            .status(503)
            .body(s3s::Body::from(body.to_string()))
            .unwrap());
    }
    let ranged =
        req.method() == http::Method::GET && req.headers().contains_key(http::header::RANGE);
    if req.method() == http::Method::GET
        && !req.uri().query().is_some_and(|q| q.contains("list-type"))
    {
        if ranged {
            f.range_gets.fetch_add(1, Ordering::SeqCst);
        } else {
            f.whole_gets.fetch_add(1, Ordering::SeqCst);
        }
    }
    if req.method() == http::Method::PUT
        && req.uri().query().is_some_and(|q| q.contains("partNumber="))
    {
        f.upload_parts.fetch_add(1, Ordering::SeqCst);
    }
    let whole = req.method() == http::Method::GET && !ranged && req.uri().query().is_none();
    let resp = service.call(req.map(s3s::Body::from)).await?;
    if whole && resp.status().is_success() && take_one(&f.cut_bodies) {
        let (parts, mut body) = resp.into_parts();
        let bytes = body.store_all_limited(1 << 30).await.unwrap();
        let half = bytes.slice(..bytes.len() / 2);
        let items: Vec<Result<bytes::Bytes, s3s::StdError>> =
            vec![Ok(half), Err("connection cut by the test server".into())];
        let cut = CutBody(futures_util::stream::iter(items));
        return Ok(http::Response::from_parts(
            parts,
            s3s::Body::from(Box::pin(cut) as s3s::stream::DynByteStream),
        ));
    }
    if ranged && resp.status().is_success() && take_one(&f.corrupt_ranges) {
        let (parts, mut body) = resp.into_parts();
        let bytes = body.store_all_limited(1 << 30).await.unwrap();
        let mut v = bytes.to_vec();
        if let Some(b) = v.last_mut() {
            *b ^= 0x5a;
        }
        return Ok(http::Response::from_parts(parts, s3s::Body::from(v)));
    }
    Ok(resp)
}

/// A body that ends in an error part way: the server drops the connection.
struct CutBody(futures_util::stream::Iter<std::vec::IntoIter<Result<bytes::Bytes, s3s::StdError>>>);

impl futures_util::Stream for CutBody {
    type Item = Result<bytes::Bytes, s3s::StdError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx)
    }
}

impl s3s::stream::ByteStream for CutBody {}
