"""A drop-in for ``webdataset.tenbin``: same functions, same signatures.

Differences a program can rely on:

- decoding is zero-copy: arrays are read-only numpy views whose ``base``
  keeps the buffer (or the memory map of ``load``) alive;
- malformed input raises ``tenstore.FormatError`` (a ``ValueError``) naming
  the byte offset or tensor index; nothing is read past the buffer;
- ``u4``, 0-d arrays and the extension dtypes ``b1`` (bool), ``bf16``
  (``ml_dtypes.bfloat16``), ``c8``, ``c16`` work (the reference refuses
  them; do not send them to programs that use the reference);
- a list given as ``infos=`` when decoding is checked name by name.
"""

import struct
import sys

import numpy as np

from . import _native
from ._native import FormatError

__all__ = [
    "FormatError",
    "encode_buffer",
    "decode_buffer",
    "encode_list",
    "decode_list",
    "encode_chunks",
    "decode_chunks",
    "write",
    "read",
    "save",
    "load",
    "zsend_single",
    "zrecv_single",
    "zsend_multipart",
    "zrecv_multipart",
    "sctp_send",
    "sctp_recv",
]

magic_str = "~TenBin~"
magic_bytes = magic_str.encode("ascii")


def roundup(n, k=64):
    """Round up to the next multiple of 64."""
    return k * ((n + k - 1) // k)


def _names(count, infos):
    if infos is None:
        return [""] * count
    infos = list(infos)
    if len(infos) != count:
        raise ValueError(f"length of list ({count}) must match length of infos ({len(infos)})")
    return [i.decode("ascii") if isinstance(i, bytes) else str(i) for i in infos]


def check_infos(data, infos, required_infos=None):
    """The reference's result shapes: arrays, or (arrays, infos) for True;
    a list or tuple is checked against the decoded names."""
    if required_infos is False or required_infos is None:
        return data
    if required_infos is True:
        return data, infos
    if not isinstance(required_infos, (tuple, list)):
        raise ValueError("required_infos must be tuple or list")
    for required, actual in zip(required_infos, infos):
        if required != actual:
            raise ValueError(f"actual info {actual} doesn't match required info {required}")
    return data


def encode_buffer(l, infos=None):
    """Encode a list of arrays into one tenbin buffer (a ``bytearray``)."""
    if not isinstance(l, list):
        raise ValueError("requires list")
    return _native.encode_buffer(l, _names(len(l), infos))


def decode_buffer(buf, infos=False):
    """Decode a tenbin buffer into read-only arrays viewing ``buf``."""
    arrays, names = _native.decode_buffer(buf)
    return check_infos(arrays, names, infos)


def encode_list(l, infos=None):
    """Encode arrays as a list of frames: header bytes, then the array's data
    (a memoryview, not a copy), for each array."""
    names = _names(len(l), infos)
    result = []
    for a, name in zip(l, names):
        header, contiguous = _native.encode_header(a, name)
        result += [header, memoryview(contiguous.reshape(-1).view(np.uint8))]
    return result


def decode_list(l, infos=False):
    """Decode header/data frame pairs into arrays viewing the data frames."""
    arrays, names = _native.decode_list(l)
    return check_infos(arrays, names, infos)


def encode_chunks(l):
    """Frame byte payloads as tenbin chunks (a ``bytearray``)."""
    size = sum(16 + roundup(memoryview(b).nbytes) for b in l)
    result = bytearray(size)
    offset = 0
    for b in l:
        b = memoryview(b).cast("B")
        n = b.nbytes
        result[offset : offset + 8] = magic_bytes
        result[offset + 8 : offset + 16] = struct.pack("<q", n)
        result[offset + 16 : offset + 16 + n] = b
        offset += 16 + roundup(n)
    return result


def decode_chunks(buf):
    """The payloads of a buffer's chunks, as memoryviews of ``buf``."""
    spans = _native.chunk_spans(buf)
    view = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf.cast("B")
    return [view[o : o + n] for o, n in spans]


def write(stream, l, infos=None):
    """Write arrays to a binary stream."""
    stream.write(encode_buffer(list(l), infos=infos))


def _read_exact(stream, n, what, offset):
    data = stream.read(n)
    if data is None or len(data) != n:
        got = 0 if data is None else len(data)
        raise FormatError(f"truncated input: {what} at byte {offset} needs {n} bytes but only {got} remain")
    return data


def _read_chunk(stream, offset):
    magic = stream.read(8)
    if not magic:
        return None, offset
    if magic != magic_bytes:
        raise FormatError(f"not a tenbin chunk at byte {offset}: magic is {bytes(magic)!r}, expected b'~TenBin~'")
    (n,) = struct.unpack("<q", _read_exact(stream, 8, "the chunk length", offset + 8))
    if n < 0:
        raise FormatError(f"chunk at byte {offset} declares a negative length ({n})")
    data = bytearray()
    while len(data) < n:  # grow only as bytes arrive
        part = stream.read(min(n - len(data), 1 << 24))
        if not part:
            raise FormatError(f"truncated input: the chunk at byte {offset} needs {n} payload bytes but only {len(data)} remain")
        data += part
    pad = roundup(n) - n
    padding = _read_exact(stream, pad, "the chunk padding", offset + 16 + n) if pad else b""
    if any(padding):
        raise FormatError(f"chunk at byte {offset} has non-zero padding")
    return bytes(data), offset + 16 + n + pad


def read(stream, n=sys.maxsize, infos=False):
    """Read up to ``n`` arrays from a binary stream."""
    frames = []
    offset = 0
    for _ in range(n):
        header, offset = _read_chunk(stream, offset)
        if header is None:
            break
        data, offset2 = _read_chunk(stream, offset)
        if data is None:
            raise FormatError(f"premature EOF: a header chunk at byte {offset} has no data chunk")
        offset = offset2
        frames += [header, data]
    arrays, names = _native.decode_list(frames)
    return check_infos(arrays, names, infos)


def save(fname, *args, infos=None, nocheck=False):
    """Save arrays to a ``.ten`` file (written beside it, then renamed)."""
    if not nocheck and not str(fname).endswith(".ten"):
        raise ValueError("file name should end in .ten")
    _native.save(str(fname), list(args), _names(len(args), infos), nocheck)


def load(fname, infos=False, nocheck=False):
    """Memory-map a ``.ten`` file: arrays view the map (which stays mapped
    while any of them lives). The file must not be truncated or rewritten
    in place meanwhile (``save`` replaces files by rename)."""
    if not nocheck and not str(fname).endswith(".ten"):
        raise ValueError("file name should end in .ten")
    arrays, names = _native.load(str(fname), nocheck)
    return check_infos(arrays, names, infos)


def zsend_single(socket, l, infos=None):
    """Send arrays as one ZeroMQ frame."""
    return socket.send(encode_buffer(l, infos=infos))


def zrecv_single(socket, infos=False):
    """Receive arrays sent as one ZeroMQ frame (views of the frame)."""
    frame = socket.recv(copy=False)
    return decode_buffer(frame.buffer if hasattr(frame, "buffer") else frame, infos=infos)


def zsend_multipart(socket, l, infos=None):
    """Send arrays as a multipart ZeroMQ message (data frames not copied)."""
    return socket.send_multipart(encode_list(l, infos=infos), copy=False)


def zrecv_multipart(socket, infos=False):
    """Receive arrays sent as a multipart ZeroMQ message (views of the frames)."""
    frames = socket.recv_multipart(copy=False)
    return decode_list([f.buffer if hasattr(f, "buffer") else f for f in frames], infos=infos)


def sctp_send(socket, dest, l, infos=None):
    """Send arrays as one SCTP (or any datagram) message to ``dest``."""
    socket.sendto(encode_buffer(l, infos=infos), dest)


def sctp_recv(socket, bufsize=100000000, infos=False):
    """Receive arrays sent as one SCTP (or any datagram) message."""
    buf, _ = socket.recvfrom(bufsize)
    return decode_buffer(buf, infos=infos)
