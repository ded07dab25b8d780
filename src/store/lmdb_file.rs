//! Checks of an LMDB data file (`data.mdb`) made with plain reads before
//! LMDB maps it: a file cut short would otherwise make the first read of a
//! missing page raise SIGBUS, and a damaged meta page gets LMDB's vague
//! `MDB_INVALID` or a misleading `MDB_VERSION_MISMATCH`.
//!
//! The layout read here is LMDB 0.9's (the one heed builds), in this
//! machine's word size and byte order, as LMDB writes it:
//!
//! - pages 0 and 1 are meta pages; page 1 starts at the page size that
//!   page 0 records. Each holds the magic `0xBEEFC0DE`, the data format
//!   version (1), the two core databases (free pages, main) and the last
//!   page number used (`mm_last_pg`); the one with the higher transaction
//!   id is the newest commit.
//! - the file holds every page up to that last page, except that LMDB may
//!   leave trailing pages unwritten when its free list (the free database)
//!   lists them: a file shorter than `(last_pg + 1) * page_size` is cut
//!   short only if a missing page is not listed as free.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::store::error::{Result, StoreError};

/// `MDB_MAGIC`.
const MAGIC: u32 = 0xBEEF_C0DE;
/// `MDB_DATA_VERSION` of LMDB 0.9.
const DATA_VERSION: u32 = 1;
/// Bytes of a page number (`pgno_t`, `size_t`) and of the other words.
const W: usize = std::mem::size_of::<usize>();
/// `PAGEHDRSZ`: page number, pad, flags, lower and upper bounds.
const PAGE_HDR: usize = W + 8;
/// Where the meta record's fields are, from the start of its page.
const M_MAGIC: usize = PAGE_HDR;
const M_VERSION: usize = PAGE_HDR + 4;
const M_DBS: usize = PAGE_HDR + 8 + 2 * W;
/// Size of an `MDB_db` record: pad, flags, depth, five words.
const DB_SIZE: usize = 8 + 5 * W;
const M_LAST_PG: usize = M_DBS + 2 * DB_SIZE;
const M_TXNID: usize = M_LAST_PG + W;
const META_END: usize = M_TXNID + W;
/// Offset of `md_root` in an `MDB_db` record.
const DB_ROOT: usize = 8 + 4 * W;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;
const F_BIGDATA: u16 = 0x01;
/// `P_INVALID`: the root of an empty database.
const NO_PAGE: u64 = if W == 8 { u64::MAX } else { u32::MAX as u64 };
/// Node header: two halves of a size or page number, flags, key size.
const NODE_HDR: usize = 8;
/// Deeper than any B-tree of a file that fits in an address space.
const MAX_DEPTH: usize = 64;

/// One meta page's fields.
#[derive(Clone, Copy, Debug)]
struct MetaPage {
    page_size: u64,
    free_root: u64,
    main_root: u64,
    last_pg: u64,
    txnid: u64,
}

fn word(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if W == 8 {
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_ne_bytes(b)
    } else {
        let mut b4 = [0u8; 4];
        b4.copy_from_slice(&buf[at..at + 4]);
        u64::from(u32::from_ne_bytes(b4))
    }
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Reads `data.mdb` of `dir` and checks it against its meta pages: that
/// both meta pages are LMDB 0.9 meta pages, and that the file holds every
/// page the newest commit may read. A missing file is not checked.
pub(crate) fn check(dir: &Path) -> Result<()> {
    let path = dir.join(crate::store::lmdb::DATA_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::io(format!("reading the size of {}", path.display()), e))?
        .len();
    let mut checker = Checker {
        file: &mut file,
        path: &path,
        len,
    };
    checker.run()
}

struct Checker<'a> {
    file: &'a mut File,
    path: &'a Path,
    len: u64,
}

impl Checker<'_> {
    fn damaged(&self, what: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: PathBuf::from(self.path),
            what: what.into(),
        }
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| StoreError::io(format!("reading {}", self.path.display()), e))
    }

    fn run(&mut self) -> Result<()> {
        if self.len == 0 {
            return Err(self.damaged(
                "the file is empty (0 bytes), so it holds no LMDB environment and no samples \
                 (restore it from a copy, or remove the store's directory to start over)",
            ));
        }
        let first = self.meta(0, 0)?;
        let page_size = first.page_size;
        let second = self.meta(1, page_size)?;
        // LMDB takes page 1 only when its transaction id is higher.
        let newest = if second.txnid > first.txnid {
            second
        } else {
            first
        };
        for (name, root) in [("free", newest.free_root), ("main", newest.main_root)] {
            if root != NO_PAGE && root > newest.last_pg {
                return Err(self.damaged(format!(
                    "the {name} database's root is page {root}, past the last page {} \
                     (transaction {})",
                    newest.last_pg, newest.txnid
                )));
            }
        }
        let have = self.len / page_size;
        let need = newest.last_pg.saturating_add(1);
        if have < need {
            self.missing_pages_are_free(&newest, have)?;
        }
        Ok(())
    }

    /// Reads and checks meta page `n` at `offset`.
    fn meta(&mut self, n: u32, offset: u64) -> Result<MetaPage> {
        if self.len < offset + META_END as u64 {
            return Err(self.damaged(format!(
                "the file is {} bytes, too short to hold LMDB's meta page {n}: it was cut short \
                 or is not an LMDB data file",
                self.len
            )));
        }
        let mut buf = [0u8; META_END];
        self.read(offset, &mut buf)?;
        let flags = u16_at(&buf, W + 2);
        let magic = u32_at(&buf, M_MAGIC);
        if flags & P_META == 0 || magic != MAGIC {
            return Err(self.damaged(format!(
                "meta page {n} (at byte {offset}) is not an LMDB meta page (magic {magic:#010x}, \
                 flags {flags:#06x}): the file is damaged or is not an LMDB data file"
            )));
        }
        let version = u32_at(&buf, M_VERSION);
        if version != DATA_VERSION {
            return Err(self.damaged(format!(
                "meta page {n} says data format version {version}, and this LMDB reads version \
                 {DATA_VERSION}: the page is damaged or the file was written by an incompatible LMDB"
            )));
        }
        let page_size = u64::from(u32_at(&buf, M_DBS));
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(self.damaged(format!(
                "meta page {n} gives a page size of {page_size} bytes (LMDB uses a power of two \
                 from 512 to 65536): the page is damaged"
            )));
        }
        Ok(MetaPage {
            page_size,
            free_root: word(&buf, M_DBS + DB_ROOT),
            main_root: word(&buf, M_DBS + DB_SIZE + DB_ROOT),
            last_pg: word(&buf, M_LAST_PG),
            txnid: word(&buf, M_TXNID),
        })
    }

    /// The file ends at page `have` before the newest commit's last page:
    /// sound only if the free database lists every missing page.
    fn missing_pages_are_free(&mut self, meta: &MetaPage, have: u64) -> Result<()> {
        let len = self.len;
        let cut = || {
            let need =
                u128::from(meta.last_pg) * u128::from(meta.page_size) + u128::from(meta.page_size);
            format!(
                "the file is {} bytes, but its last commit (transaction {}) uses pages up to {} \
                 of {} bytes ({need} bytes): the file was cut short and samples are missing \
                 (restore it from a copy)",
                len, meta.txnid, meta.last_pg, meta.page_size
            )
        };
        if meta.free_root == NO_PAGE {
            return Err(self.damaged(cut()));
        }
        let mut walk = FreeWalk {
            page_size: meta.page_size,
            have,
            last: meta.last_pg,
            found: Vec::new(),
            pages_read: 0,
        };
        // A free list that cannot be read through is as good as none.
        if walk.tree(self, meta.free_root, 0).is_err() {
            return Err(self.damaged(cut()));
        }
        walk.found.sort_unstable();
        walk.found.dedup();
        if walk.found.len() as u64 != meta.last_pg - have + 1 {
            return Err(self.damaged(cut()));
        }
        Ok(())
    }
}

/// A walk of the free database collecting the free pages at or past page
/// `have` (the first page the file lacks).
struct FreeWalk {
    page_size: u64,
    have: u64,
    last: u64,
    found: Vec<u64>,
    pages_read: u64,
}

type Walk<T> = std::result::Result<T, String>;

impl FreeWalk {
    fn page(&mut self, c: &mut Checker<'_>, pgno: u64) -> Walk<Vec<u8>> {
        if pgno >= self.have {
            return Err(format!("page {pgno} is past the end of the file"));
        }
        self.pages_read += 1;
        if self.pages_read > self.have {
            return Err("it loops".into());
        }
        let mut buf = vec![0u8; self.page_size as usize];
        c.read(pgno * self.page_size, &mut buf)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    }

    fn tree(&mut self, c: &mut Checker<'_>, pgno: u64, depth: usize) -> Walk<()> {
        if depth > MAX_DEPTH {
            return Err("it is deeper than any LMDB tree".into());
        }
        let page = self.page(c, pgno)?;
        let flags = u16_at(&page, W + 2);
        let lower = usize::from(u16_at(&page, W + 4));
        if lower < PAGE_HDR || lower > page.len() {
            return Err(format!("page {pgno} has a bad header"));
        }
        let keys = (lower - PAGE_HDR) / 2;
        for i in 0..keys {
            let at = usize::from(u16_at(&page, PAGE_HDR + 2 * i));
            if at + NODE_HDR > page.len() {
                return Err(format!("page {pgno} has a node out of bounds"));
            }
            let (lo, hi) = if cfg!(target_endian = "little") {
                (u16_at(&page, at), u16_at(&page, at + 2))
            } else {
                (u16_at(&page, at + 2), u16_at(&page, at))
            };
            let nflags = u16_at(&page, at + 4);
            let ksize = usize::from(u16_at(&page, at + 6));
            let low = u64::from(lo) | u64::from(hi) << 16;
            if flags & P_BRANCH != 0 {
                let child = if W == 8 {
                    low | u64::from(nflags) << 32
                } else {
                    low
                };
                self.tree(c, child, depth + 1)?;
            } else if flags & P_LEAF != 0 && flags & P_LEAF2 == 0 {
                let data = at + NODE_HDR + ksize;
                if nflags & F_BIGDATA != 0 {
                    if data + W > page.len() {
                        return Err(format!("page {pgno} has a node out of bounds"));
                    }
                    self.overflow(c, word(&page, data), low)?;
                } else {
                    let end = data + low as usize;
                    if end > page.len() {
                        return Err(format!("page {pgno} has a node out of bounds"));
                    }
                    self.idl(&page[data..end]);
                }
            } else {
                return Err(format!("page {pgno} is not a branch or leaf page"));
            }
        }
        Ok(())
    }

    /// A list of free pages kept on overflow pages from `pgno`, `len`
    /// bytes, read in pieces.
    fn overflow(&mut self, c: &mut Checker<'_>, pgno: u64, len: u64) -> Walk<()> {
        let head = self.page(c, pgno)?;
        if u16_at(&head, W + 2) & P_OVERFLOW == 0 {
            return Err(format!("page {pgno} is not an overflow page"));
        }
        let start = pgno * self.page_size + PAGE_HDR as u64;
        if start + len > self.have * self.page_size {
            return Err(format!(
                "the list on page {pgno} runs past the end of the file"
            ));
        }
        const PIECE: u64 = 1 << 16;
        let mut done = 0u64;
        let mut count: Option<u64> = None;
        while done < len {
            let n = (len - done).min(PIECE) / W as u64 * W as u64;
            if n == 0 {
                break;
            }
            let mut buf = vec![0u8; n as usize];
            c.read(start + done, &mut buf).map_err(|e| e.to_string())?;
            let mut words = buf.chunks_exact(W).map(|w| word(w, 0));
            if count.is_none() {
                count = words.next();
            }
            let left = count.get_or_insert(0);
            for p in words.take(usize::try_from(*left).unwrap_or(usize::MAX)) {
                *left -= 1;
                self.note(p);
            }
            done += n;
        }
        Ok(())
    }

    /// An IDL: a count, then that many page numbers.
    fn idl(&mut self, data: &[u8]) {
        let words: Vec<u64> = data.chunks_exact(W).map(|w| word(w, 0)).collect();
        if let Some((&n, pages)) = words.split_first() {
            for &p in pages.iter().take(n as usize) {
                self.note(p);
            }
        }
    }

    fn note(&mut self, pgno: u64) {
        if pgno >= self.have && pgno <= self.last {
            self.found.push(pgno);
            let bound = (self.last - self.have + 1).max(1024) as usize;
            if self.found.len() > 2 * bound {
                self.found.sort_unstable();
                self.found.dedup();
            }
        }
    }
}
