//! Tensors over ZeroMQ, as tensorcom and webdataset send them.
//!
//! - single part: one frame holding the whole encoded buffer;
//! - multipart: frames alternating raw header and data payloads.

use crate::codec::{decode_pair, encode_into, encode_list, encoded_len, TensorBuf};
use crate::net::error::{NetError, Result};
use crate::tensor::{AsTensorRef, TensorView};

/// A received ZeroMQ message's bytes.
pub struct ZmqBytes(zmq::Message);

impl AsRef<[u8]> for ZmqBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Sends `tensors` as one frame holding their tenbin buffer. The buffer is
/// encoded straight into the message libzmq sends: no intermediate copy.
///
/// ```
/// use tenstore::net::{zrecv_single, zsend_single};
/// use tenstore::{DType, TensorRef};
///
/// let ctx = zmq::Context::new();
/// let (a, b) = (ctx.socket(zmq::PAIR)?, ctx.socket(zmq::PAIR)?);
/// a.bind("inproc://doc-single")?;
/// b.connect("inproc://doc-single")?;
/// zsend_single(&a, &[TensorRef::raw("x", DType::U8, &[2], &[7, 9])?], 0)?;
/// let got = zrecv_single(&b, 0)?;
/// assert_eq!(got.tensors().get(0).unwrap().data(), &[7, 9]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn zsend_single<T: AsTensorRef>(socket: &zmq::Socket, tensors: &[T], flags: i32) -> Result<()> {
    let mut msg = zmq::Message::with_size(encoded_len(tensors)?);
    encode_into(tensors, &mut msg)?;
    socket
        .send(msg, flags)
        .map_err(|e| NetError::zmq("sending a tenbin message", e))
}

/// Receives one frame and checks it as a tenbin buffer. The result owns
/// the message and lends zero-copy views into it (as with any buffer, a
/// view is zero-copy when the data address suits its type: see
/// [`TensorView`]; large messages get buffers of their own, which are;
/// `cow_array` copies when not).
pub fn zrecv_single(socket: &zmq::Socket, flags: i32) -> Result<TensorBuf<ZmqBytes>> {
    let msg = socket
        .recv_msg(flags)
        .map_err(|e| NetError::zmq("receiving a tenbin message", e))?;
    if msg.get_more() {
        drain(socket);
        return Err(NetError::Protocol(
            "expected a single-frame tenbin message, got a multipart one".into(),
        ));
    }
    Ok(TensorBuf::new(ZmqBytes(msg))?)
}

/// Sends `tensors` as multipart frames: header, data, header, data, ...
/// Headers are encoded into their messages directly; data frames are
/// copied into messages once (libzmq needs to own what it sends).
pub fn zsend_multipart<T: AsTensorRef>(
    socket: &zmq::Socket,
    tensors: &[T],
    flags: i32,
) -> Result<()> {
    let frames = encode_list(tensors);
    if frames.is_empty() {
        // An empty list is one empty frame, so that the receiver gets a
        // message at all.
        return socket
            .send(zmq::Message::new(), flags)
            .map_err(|e| NetError::zmq("sending an empty tenbin message", e));
    }
    let last = frames.len() - 1;
    for (i, frame) in frames.iter().enumerate() {
        let more = if i < last { zmq::SNDMORE } else { 0 };
        socket
            .send(&frame[..], flags | more)
            .map_err(|e| NetError::zmq("sending tenbin frames", e))?;
    }
    Ok(())
}

/// Receives a multipart message of header and data frames. The result
/// owns the frames and lends views without a copy. libzmq places small
/// received frames at any address, so multi-byte data frames are often
/// not aligned for their type (about half of them in the tests over tcp
/// and ipc): use `cow_array`, which borrows when it can and copies when
/// not, rather than `array`.
pub fn zrecv_multipart(socket: &zmq::Socket, flags: i32) -> Result<Frames> {
    let mut frames = Vec::new();
    loop {
        let msg = socket
            .recv_msg(flags)
            .map_err(|e| NetError::zmq("receiving tenbin frames", e))?;
        let more = msg.get_more();
        frames.push(msg);
        if !more {
            break;
        }
    }
    if frames.len() == 1 && frames[0].is_empty() {
        frames.clear();
    }
    Frames::new(frames)
}

/// Discards the rest of a multipart message.
fn drain(socket: &zmq::Socket) {
    while socket.get_rcvmore().unwrap_or(false) {
        if socket.recv_msg(0).is_err() {
            break;
        }
    }
}

/// A received multipart message of tensors, checked; it lends views.
pub struct Frames {
    frames: Vec<zmq::Message>,
}

impl Frames {
    /// Checks frames (header, data, ...) and takes ownership of them.
    pub fn new(frames: Vec<zmq::Message>) -> Result<Frames> {
        if !frames.len().is_multiple_of(2) {
            return Err(crate::Error::OddFrames {
                frames: frames.len(),
            }
            .into());
        }
        for (i, pair) in frames.chunks_exact(2).enumerate() {
            decode_pair(i, &pair[0], &pair[1])?;
        }
        Ok(Frames { frames })
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.frames.len() / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The tensor at `index`.
    pub fn get(&self, index: usize) -> Option<TensorView<'_>> {
        let h = self.frames.get(2 * index)?;
        let d = self.frames.get(2 * index + 1)?;
        decode_pair(index, h, d).ok()
    }

    /// The tensors in order.
    pub fn iter(&self) -> impl Iterator<Item = TensorView<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}
