//! The server's bound on reply bytes waiting for clients.
//!
//! ZeroMQ counts its queues in messages, not bytes, and a client that does
//! not read leaves its replies queued in the server. So the server counts
//! the bytes itself: a reply's data frames are copied into one block that
//! is charged to a [`ReplyBudget`] before it is allocated, and handed to
//! libzmq without another copy (`zmq_msg_init_data`). libzmq calls back
//! when it lets go of a frame (written to the kernel, dropped at a full
//! queue, or dropped because its peer left); when the last frame of a
//! block is let go, its bytes are given back and the block is freed (or,
//! if small, kept for a later reply: at most 4 MiB of such spares).

use std::collections::HashMap;
use std::os::raw::c_void;
use std::sync::{Arc, Mutex, PoisonError};

/// Blocks this large or larger are anonymous memory maps of their own, so
/// that freeing one gives its memory back to the system at once (the heap
/// might keep it).
const MAP_THRESHOLD: usize = 64 << 10;

/// Bytes of replies that may wait for clients to read them: in all, and
/// per client.
#[derive(Debug)]
pub(crate) struct ReplyBudget {
    max: usize,
    max_peer: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    /// Bytes charged per routing identity; a peer with none has no entry.
    peers: HashMap<Vec<u8>, usize>,
    /// Heap blocks given back, kept for the next replies (at most
    /// [`SPARE_BLOCKS`], each smaller than [`MAP_THRESHOLD`]): a reply of
    /// a sample then costs no allocation of its size, and no free of it
    /// on libzmq's I/O thread (a free of another thread's memory, which
    /// the allocator does not cache). Not charged: they hold no reply.
    spare: Vec<Vec<u8>>,
}

/// Heap blocks kept for reuse, at most: `SPARE_BLOCKS * MAP_THRESHOLD`
/// bytes (4 MiB) in all.
const SPARE_BLOCKS: usize = 64;

/// Why a reply was not charged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Larger than the whole budget: it can never be sent.
    TooLarge {
        /// The reply's bytes.
        bytes: usize,
        /// The budget.
        max: usize,
    },
    /// Replies to all clients fill the budget.
    Busy {
        /// Bytes charged now.
        queued: usize,
        /// The budget.
        max: usize,
    },
    /// Replies to this client fill its share.
    PeerBusy {
        /// Bytes charged to this client now.
        queued: usize,
        /// Its share.
        max: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge { bytes, max } => write!(
                f,
                "reply of {bytes} bytes exceeds the {max} bytes the server may queue for \
                 its clients (--max-queued-bytes); ask for fewer keys"
            ),
            Refusal::Busy { queued, max } => write!(
                f,
                "server busy: {queued} bytes of replies are queued for clients that have not \
                 read them (limit {max}); retry later"
            ),
            Refusal::PeerBusy { queued, max } => write!(
                f,
                "server busy: {queued} bytes of replies to this client are still unread \
                 (limit {max} per client); read them, then retry"
            ),
        }
    }
}

impl ReplyBudget {
    /// A budget of `max` bytes in all and `max_peer` per client. A client
    /// with nothing charged may always be charged one reply that fits in
    /// the whole budget, however large its share.
    pub(crate) fn new(max: usize, max_peer: usize) -> Arc<ReplyBudget> {
        Arc::new(ReplyBudget {
            max,
            max_peer,
            state: Mutex::new(State::default()),
        })
    }

    /// Bytes charged now.
    pub(crate) fn queued(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a pair of counters, consistent after every
        // statement: a panic elsewhere leaves nothing half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty heap block with room for `bytes` (under
    /// [`MAP_THRESHOLD`]): a spare one that fits (room for `bytes`, at most
    /// twice that, so a small reply charged its size never holds a much
    /// larger block), else a new one of exactly that size.
    fn heap_block(&self, bytes: usize) -> Vec<u8> {
        let fits = |v: &Vec<u8>| (bytes..=bytes.saturating_mul(2)).contains(&v.capacity());
        let mut st = self.lock();
        match st.spare.iter().rposition(fits) {
            Some(i) => st.spare.swap_remove(i),
            None => {
                drop(st);
                Vec::with_capacity(bytes)
            }
        }
    }

    /// Keeps an emptied heap block for [`heap_block`](Self::heap_block),
    /// unless enough are kept or it is large.
    fn give_back(&self, mut v: Vec<u8>) {
        if v.capacity() >= MAP_THRESHOLD {
            return;
        }
        v.clear();
        let mut st = self.lock();
        if st.spare.len() < SPARE_BLOCKS {
            st.spare.push(v);
        }
    }

    /// Charges `bytes` for a reply to `peer`, or says why not.
    fn charge(self: &Arc<Self>, peer: &[u8], bytes: usize) -> Result<Charge, Refusal> {
        if bytes > self.max {
            return Err(Refusal::TooLarge {
                bytes,
                max: self.max,
            });
        }
        let mut st = self.lock();
        if st.total + bytes > self.max {
            return Err(Refusal::Busy {
                queued: st.total,
                max: self.max,
            });
        }
        let mine = st.peers.get(peer).copied().unwrap_or(0);
        if mine > 0 && mine + bytes > self.max_peer {
            return Err(Refusal::PeerBusy {
                queued: mine,
                max: self.max_peer,
            });
        }
        st.total += bytes;
        if bytes > 0 {
            // A client with replies queued (a pipelining one) has its
            // entry already: no allocation for it.
            match st.peers.get_mut(peer) {
                Some(mine) => *mine += bytes,
                None => {
                    st.peers.insert(peer.to_vec(), bytes);
                }
            }
        }
        Ok(Charge {
            budget: self.clone(),
            peer: peer.to_vec(),
            bytes,
        })
    }
}

/// Bytes charged to a budget until dropped.
#[derive(Debug)]
struct Charge {
    budget: Arc<ReplyBudget>,
    peer: Vec<u8>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        st.total -= self.bytes;
        if let Some(mine) = st.peers.get_mut(&self.peer) {
            *mine -= self.bytes;
            if *mine == 0 {
                st.peers.remove(&self.peer);
            }
        }
    }
}

/// The memory of a block.
enum Storage {
    Heap(Vec<u8>),
    Map(memmap2::MmapMut),
}

/// A reply's data frames, one after another, and their charge. Never
/// written after it is made.
struct Block {
    storage: Storage,
    _charge: Charge,
}

impl Drop for Block {
    fn drop(&mut self) {
        // The charge is given back after this, when the field drops.
        if let Storage::Heap(v) = &mut self.storage {
            self._charge.budget.give_back(std::mem::take(v));
        }
    }
}

impl Block {
    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(b) => b,
            Storage::Map(m) => m,
        }
    }
}

// What the libzmq callback relies on: a block may be dropped on any thread
// (libzmq's I/O thread, usually) and read from several.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Block>();
};

/// One frame over a block, owned by libzmq once sent.
pub(crate) struct Frame {
    msg: zmq_sys::zmq_msg_t,
}

impl Frame {
    /// Sends this frame on `socket` (with `flags`, e.g. `zmq::SNDMORE`).
    /// On success libzmq owns the frame; on failure it is closed here,
    /// which lets go of its part of the block.
    pub(crate) fn send(mut self, socket: &mut zmq::Socket, flags: i32) -> std::io::Result<()> {
        // SAFETY: `self.msg` was initialized by `zmq_msg_init_data` (see
        // `frames`) and is open until `drop`; `socket` is a live socket,
        // borrowed mutably so no other thread uses it meanwhile (libzmq
        // sockets are not thread-safe). On success libzmq empties `msg`,
        // which `zmq_msg_close` in `drop` then accepts; on failure `msg` is
        // unchanged and `drop` closes it.
        let rc = unsafe { zmq_sys::zmq_msg_send(&mut self.msg, socket.as_mut_ptr(), flags) };
        if rc == -1 {
            // libzmq reports its errors in this thread's errno.
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: `msg` is an initialized message (sent, and so emptied,
        // or not); closing it once is what libzmq requires, and `drop`
        // runs once. Closing an unsent frame calls `release_frame`.
        unsafe {
            zmq_sys::zmq_msg_close(&mut self.msg);
        }
    }
}

/// libzmq's free function for frames made by [`frames`]: lets go of the
/// frame's reference to its block.
unsafe extern "C" fn release_frame(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Arc::into_raw` of one reference to a `Block`,
    // made for this frame alone in `frames`; libzmq calls the free
    // function exactly once per message content, after its last use of
    // the data, so this takes back that one reference once. `Block` is
    // `Send + Sync`, so dropping it on libzmq's thread is sound.
    drop(unsafe { Arc::from_raw(hint as *const Block) });
}

/// Copies `parts` into one block charged to `budget` for `peer`, and
/// returns one frame per part, or why the budget refused.
pub(crate) fn frames<P: AsRef<[u8]>>(
    budget: &Arc<ReplyBudget>,
    peer: &[u8],
    parts: &[P],
) -> Result<Vec<Frame>, Refusal> {
    let total: usize = parts.iter().map(|p| p.as_ref().len()).sum();
    let charge = budget.charge(peer, total)?;
    let map = if total >= MAP_THRESHOLD {
        memmap2::MmapMut::map_anon(total).ok()
    } else {
        None
    };
    let storage = match map {
        Some(mut m) => {
            let mut at = 0;
            for p in parts {
                let p = p.as_ref();
                m[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            Storage::Map(m)
        }
        None => {
            // Written once, not zeroed first, into a spare block when
            // there is one.
            let mut v = budget.heap_block(total);
            for p in parts {
                v.extend_from_slice(p.as_ref());
            }
            Storage::Heap(v)
        }
    };
    let block = Arc::new(Block {
        storage,
        _charge: charge,
    });
    let base = block.bytes().as_ptr();
    let mut out = Vec::with_capacity(parts.len());
    let mut at = 0;
    for p in parts {
        let p = p.as_ref();
        let hint = Arc::into_raw(block.clone()) as *mut c_void;
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: `base + at .. base + at + p.len()` lies within the
        // block (the parts were copied there back to back), which is never
        // written again and lives until the last frame's `release_frame`
        // drops the reference `hint` holds; libzmq only reads the data.
        // `msg` is a fresh, 8-byte aligned `zmq_msg_t`.
        let rc = unsafe {
            zmq_sys::zmq_msg_init_data(
                &mut msg,
                base.add(at) as *mut c_void,
                p.len(),
                Some(release_frame),
                hint,
            )
        };
        if rc == -1 {
            // libzmq could not allocate its record: it did not take the
            // reference, so take it back. (The frames made so far release
            // theirs when dropped.)
            // SAFETY: `hint` came from `Arc::into_raw` just above and was
            // not handed to anyone.
            drop(unsafe { Arc::from_raw(hint as *const Block) });
            return Err(Refusal::Busy {
                queued: budget.queued(),
                max: budget.max,
            });
        }
        out.push(Frame { msg });
        at += p.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_in_all_and_per_peer_and_given_back_on_drop() {
        let b = ReplyBudget::new(100, 30);
        let a1 = b
            .charge(b"a", 40)
            .expect("a peer with nothing may take one reply");
        assert_eq!(
            b.charge(b"a", 1).unwrap_err(),
            Refusal::PeerBusy {
                queued: 40,
                max: 30
            }
        );
        let b1 = b.charge(b"b", 30).unwrap();
        let c1 = b.charge(b"c", 30).unwrap();
        assert_eq!(
            b.charge(b"d", 1).unwrap_err(),
            Refusal::Busy {
                queued: 100,
                max: 100
            }
        );
        assert_eq!(
            b.charge(b"d", 101).unwrap_err(),
            Refusal::TooLarge {
                bytes: 101,
                max: 100
            }
        );
        drop(a1);
        assert_eq!(b.queued(), 60);
        let d1 = b.charge(b"d", 40).unwrap();
        drop((b1, c1, d1));
        assert_eq!(b.queued(), 0);
        assert!(b.lock().peers.is_empty());
    }

    #[test]
    fn heap_blocks_are_reused_and_the_spares_are_bounded() {
        let b = ReplyBudget::new(1 << 30, 1 << 30);
        // Sent one at a time: the second reply reuses the first's block.
        let f = frames(&b, b"p", &[&[1u8; 5000][..]]).unwrap();
        drop(f);
        assert_eq!(b.lock().spare.len(), 1);
        let f = frames(&b, b"p", &[&[2u8; 4000][..]]).unwrap();
        assert_eq!(b.lock().spare.len(), 0);
        drop(f);
        // Many replies at once: at most SPARE_BLOCKS are kept afterwards,
        // and no mapped (large) block is.
        let many: Vec<_> = (0..SPARE_BLOCKS + 10)
            .map(|i| frames(&b, b"p", &[&vec![i as u8; 3000][..]]).unwrap())
            .collect();
        let large = frames(&b, b"q", &[&vec![9u8; MAP_THRESHOLD][..]]).unwrap();
        drop(many);
        drop(large);
        let st = b.lock();
        assert_eq!(st.spare.len(), SPARE_BLOCKS);
        assert!(st
            .spare
            .iter()
            .all(|v| v.is_empty() && v.capacity() < MAP_THRESHOLD));
        assert_eq!(st.total, 0);
    }

    #[test]
    fn a_reused_block_holds_the_new_reply_only() {
        let b = ReplyBudget::new(1 << 20, 1 << 20);
        drop(frames(&b, b"p", &[&[7u8; 6000][..]]).unwrap());
        let ctx = zmq::Context::new();
        let mut tx = ctx.socket(zmq::PAIR).unwrap();
        let rx = ctx.socket(zmq::PAIR).unwrap();
        rx.bind("inproc://budget-reuse").unwrap();
        tx.connect("inproc://budget-reuse").unwrap();
        let mut f = frames(&b, b"p", &[&b"ab"[..], &[3u8; 4000][..]]).unwrap();
        assert_eq!(b.lock().spare.len(), 0, "the spare block was taken");
        let last = f.pop().unwrap();
        f.pop().unwrap().send(&mut tx, zmq::SNDMORE).unwrap();
        last.send(&mut tx, 0).unwrap();
        assert_eq!(
            rx.recv_multipart(0).unwrap(),
            [b"ab".to_vec(), vec![3u8; 4000]]
        );
        assert_eq!(b.lock().spare.len(), 1);
    }

    #[test]
    fn a_small_reply_does_not_take_a_much_larger_block() {
        let b = ReplyBudget::new(1 << 20, 1 << 20);
        drop(frames(&b, b"p", &[&[7u8; 40_000][..]]).unwrap());
        assert_eq!(b.lock().spare.len(), 1);
        // 100 bytes charged must not hold 40 KB: a new block is made, and
        // the large spare stays for a reply it fits.
        let small = frames(&b, b"p", &[&[1u8; 100][..]]).unwrap();
        assert_eq!(b.lock().spare.len(), 1);
        assert_eq!(b.lock().spare[0].capacity(), 40_000);
        drop(small);
        let fits = frames(&b, b"p", &[&[2u8; 30_000][..]]).unwrap();
        assert!(b.lock().spare.iter().all(|v| v.capacity() < 1000));
        drop(fits);
        // A block of MAP_THRESHOLD bytes or more is never kept.
        let before = b.lock().spare.len();
        b.give_back(Vec::with_capacity(MAP_THRESHOLD));
        assert_eq!(b.lock().spare.len(), before);
        b.give_back(Vec::with_capacity(MAP_THRESHOLD - 1));
        assert_eq!(b.lock().spare.len(), before + 1);
    }

    #[test]
    fn frames_hold_the_charge_until_the_last_is_closed() {
        let b = ReplyBudget::new(1 << 20, 1 << 20);
        let big = vec![7u8; 100 << 10];
        let frames = frames(&b, b"p", &[&b"abc"[..], &big, b""]).unwrap();
        assert_eq!(b.queued(), 3 + (100 << 10));
        let mut frames = frames.into_iter();
        drop(frames.next());
        assert_eq!(b.queued(), 3 + (100 << 10));
        drop(frames);
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn sent_frames_arrive_whole_and_release_once_read() {
        let ctx = zmq::Context::new();
        let mut tx = ctx.socket(zmq::PAIR).unwrap();
        let rx = ctx.socket(zmq::PAIR).unwrap();
        rx.bind("inproc://budget-test").unwrap();
        tx.connect("inproc://budget-test").unwrap();
        let b = ReplyBudget::new(1 << 20, 1 << 20);
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut frames = frames(&b, b"p", &[&b"head"[..], &big]).unwrap();
        let last = frames.pop().unwrap();
        frames.pop().unwrap().send(&mut tx, zmq::SNDMORE).unwrap();
        last.send(&mut tx, 0).unwrap();
        assert_eq!(b.queued(), 4 + 70_000, "queued in libzmq: still charged");
        let got = rx.recv_multipart(0).unwrap();
        assert_eq!(got, [b"head".to_vec(), big]);
        assert_eq!(b.queued(), 0);
    }
}
