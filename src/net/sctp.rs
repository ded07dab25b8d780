//! Tensors over SCTP: one message (datagram) carries one tenbin buffer.
//!
//! The framing works on any message-preserving socket; the same
//! [`send_message`] and [`recv_message`] serve `AF_UNIX` `SOCK_SEQPACKET`
//! sockets, which is how it is tested where the kernel has no SCTP.

use std::mem::MaybeUninit;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::codec::{encode_buffer, TensorBuf};
use crate::net::error::{NetError, Result};
use crate::tensor::AsTensorRef;

/// IANA protocol number of SCTP.
const IPPROTO_SCTP: i32 = 132;

/// Makes a one-to-many SCTP socket (`SOCK_SEQPACKET`) of `domain`.
///
/// Fails with [`NetError::NoSctp`] on kernels without SCTP support (the
/// socket call fails with `EPROTONOSUPPORT` or `ESOCKTNOSUPPORT`).
pub fn sctp_socket(domain: Domain) -> Result<Socket> {
    match Socket::new(domain, Type::SEQPACKET, Some(Protocol::from(IPPROTO_SCTP))) {
        Ok(s) => Ok(s),
        // EPROTONOSUPPORT (93), ESOCKTNOSUPPORT (94): no SCTP in this kernel.
        Err(e) if matches!(e.raw_os_error(), Some(93) | Some(94)) => Err(NetError::NoSctp(e)),
        Err(e) => Err(NetError::io("making an SCTP socket", e)),
    }
}

/// Sends `tensors` as one SCTP message, to `dest` or, when `None`, to the
/// socket's connected peer.
pub fn sctp_send<T: AsTensorRef>(
    socket: &Socket,
    dest: Option<&SockAddr>,
    tensors: &[T],
) -> Result<()> {
    send_message(socket, dest, &encode_buffer(tensors)?)
}

/// Receives one SCTP message of at most `maxsize` bytes and checks it as a
/// tenbin buffer. A larger message is an error ([`NetError::TooLarge`]),
/// never a partial decode.
pub fn sctp_recv(socket: &Socket, maxsize: usize) -> Result<TensorBuf<AlignedBuf>> {
    recv_message(socket, maxsize)
}

/// Sends one message on a message-preserving socket; a short send (which
/// such sockets do not make) is an error, and so is an empty message (an
/// empty tensor list), which the receiver could not tell from a close.
pub fn send_message(socket: &Socket, dest: Option<&SockAddr>, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Err(NetError::Protocol(
            "an empty message cannot be sent: on a message socket it reads as the peer closing"
                .into(),
        ));
    }
    let sent = match dest {
        Some(addr) => socket.send_to(bytes, addr),
        None => socket.send(bytes),
    }
    .map_err(|e| NetError::io("sending a tenbin message", e))?;
    if sent != bytes.len() {
        return Err(NetError::Protocol(format!(
            "sent {sent} of {} bytes of a message",
            bytes.len()
        )));
    }
    Ok(())
}

/// Bytes in an 8-byte aligned allocation, so that every dtype views in
/// place (payloads sit at multiples of 16 from the start).
pub struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// `MSG_PEEK` (the same value on Linux and the BSDs).
const MSG_PEEK: i32 = 2;

/// First buffer for a message; it doubles while the peeked message is
/// larger, so memory follows the message, not `maxsize`.
const FIRST_BUFFER: usize = 64 << 10;

/// Receives one message of at most `maxsize` bytes on a message-preserving
/// socket, into an 8-byte aligned buffer, and checks it as tenbin.
///
/// The message is peeked with a buffer that doubles until it holds it (or
/// `maxsize` is passed), so a large `maxsize` costs nothing up front.
/// Truncation is detected from the receive flags; a message over the
/// limit is received into a small buffer and dropped, and the error is
/// [`NetError::TooLarge`]. A zero-length read means the peer has closed
/// ([`NetError::Closed`]): that is why [`send_message`] refuses to send an
/// empty message.
pub fn recv_message(socket: &Socket, maxsize: usize) -> Result<TensorBuf<AlignedBuf>> {
    let mut cap = maxsize.saturating_add(1).min(FIRST_BUFFER);
    loop {
        let mut words = vec![0u64; cap.div_ceil(8)];
        let (n, truncated) = recv_into(socket, &mut words, cap, MSG_PEEK)?;
        if n == 0 && !truncated {
            // Consume the end-of-stream (or empty) message.
            recv_into(socket, &mut words, cap, 0)?;
            return Err(NetError::Closed);
        }
        if truncated || n > maxsize {
            if cap > maxsize {
                // Over the limit: drop it, so the next message is whole.
                let mut small = [0u64; 1];
                recv_into(socket, &mut small, 8, 0)?;
                return Err(NetError::TooLarge { max: maxsize });
            }
            cap = cap.saturating_mul(2).min(maxsize.saturating_add(1));
            continue;
        }
        let (n, truncated) = recv_into(socket, &mut words, cap, 0)?;
        if truncated || n > maxsize {
            return Err(NetError::TooLarge { max: maxsize });
        }
        return Ok(TensorBuf::new(AlignedBuf { words, len: n })?);
    }
}

/// One `recvmsg` into the first `cap` bytes of `words`: the length and
/// whether the message was longer.
fn recv_into(socket: &Socket, words: &mut [u64], cap: usize, flags: i32) -> Result<(usize, bool)> {
    let bytes: &mut [u8] = &mut bytemuck::cast_slice_mut(words)[..cap];
    // SAFETY: `MaybeUninit<u8>` has the size, alignment and validity of
    // `u8`, so the same memory viewed as `[MaybeUninit<u8>]` is valid; it
    // is initialised (the caller zeroed it), and the kernel writes only
    // bytes into it, so it stays initialised for `words` to be read
    // afterwards. The view borrows `bytes` mutably and ends with this call.
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes.len())
    };
    let mut slices = [socket2::MaybeUninitSlice::new(uninit)];
    let (n, rflags) = socket
        .recv_vectored_with_flags(&mut slices, flags)
        .map_err(|e| NetError::io("receiving a tenbin message", e))?;
    Ok((n, rflags.is_truncated()))
}
