//! PDF page count: the page objects reached by walking the page tree, never
//! a number the file claims.
//!
//! # Why not `/Count`
//!
//! A page-tree node's `/Count` is a claim, and an upload is untrusted: a
//! crafted file says `/Count 4294967295` over one page, a broken one says
//! anything, and a tree whose kids loop back has no finite count at all. So
//! `/Count` is never read. The count is the number of *distinct* page
//! objects reached from the document catalog (`/Root` → `/Pages` → `/Kids`
//! …), walked with a visited set (a loop or a kid listed twice is counted
//! once), an explicit stack (a 100,000-level tree cannot overflow the
//! thread's stack) and a depth limit of [`MAX_DEPTH`] levels (real trees are
//! rarely deeper than 6; kids deeper than the limit are not followed).
//!
//! # Why an index built by scanning, and no PDF crate
//!
//! The cross-reference table is not used either: in the files people upload
//! it is often stale, truncated or missing, and its offsets are one more
//! claim. Like a viewer's repair mode, one pass over the bytes finds every
//! `N G obj` header and remembers where the object's body is (16 bytes per
//! object, no parsed objects kept). For the same object number the last
//! definition in the file wins, as incremental updates append. Objects in
//! `/Type /ObjStm` object streams (`/FlateDecode`) are indexed too, as if
//! defined where their stream is. The stream data of ordinary objects is
//! skipped (by `/Length` when it checks out, else up to `endstream`), so
//! text such as `9 0 obj << /Type /Page >>` inside a content stream is not
//! an object. A full parser (lopdf and the like) loads and decodes every
//! object and costs several times the file in memory; this runs in a worker
//! under a memory budget, so the parser here extracts only what the walk
//! needs: `/Type`, `/Kids`, `/Pages`, `/Root` and the few keys that locate
//! streams. Generation numbers are ignored (a reference resolves to the
//! last definition of its object number).
//!
//! The catalog is the `/Root` of the last trailer or cross-reference stream
//! (`/Type /XRef`) that has one; if there is none or it does not lead to a
//! page-tree root, the last `/Type /Catalog` object whose `/Pages` does.
//!
//! # Bounds
//!
//! Every step is linear in the input or capped, and whatever is over a cap
//! is ignored. At most [`MAX_OBJECTS`] objects are indexed (a sorted vector
//! of 16-byte entries, 32 MB at the cap: a hash map would be three times
//! that). At most [`MAX_STREAMS`] object streams are inflated, each to at
//! most [`MAX_STREAM_OUT`] bytes and all together to [`MAX_TOTAL_OUT`];
//! the ones that hold objects are kept for the walk. The index and the kept
//! streams share one budget, [`MEMORY`], which keeps the whole count under
//! the `PDF_MEMORY` the worker reserves for it (lib.rs). The walk's visited
//! set is a bitmap over the index, and its stack holds one frame per level
//! (the rest of that level's kids), not one entry per kid. Each object is
//! parsed a bounded number of times, and the walk visits each at most once.
//! Nothing panics on any input: no indexing past an end, no unwrap.
//!
//! # What `None` means
//!
//! `None` is "unknown", never "zero pages" (every valid PDF has a page):
//! a page tree was found but reaches no page (empty, all kids dangling, or
//! the pages are beyond the depth limit), or there is no usable catalog and
//! no object at all is a `/Type /Page` dictionary (garbage after `%PDF-`, or
//! an encrypted file whose objects are all inside encrypted object
//! streams). Without a usable catalog the count falls back to the number of
//! indexed `/Type /Page` objects: real objects again, not a claimed number.
//!
//! Known limit: a literal `N G obj` inside a string of a dictionary looks
//! like an object header and cuts that dictionary short, so that one object
//! is unreadable (it does not shadow an earlier, complete definition: only
//! complete dictionaries and arrays are indexed).

/// At most this many objects are indexed (16 bytes each); more are ignored.
const MAX_OBJECTS: usize = 2_000_000;
/// At most this many object streams are inflated...
const MAX_STREAMS: usize = 1024;
/// ...each to at most this many bytes...
const MAX_STREAM_OUT: usize = 8 << 20;
/// ...and all of them together to at most this many.
const MAX_TOTAL_OUT: usize = 64 << 20;
/// What the index and the inflated object streams kept for the walk may
/// hold together, counted by capacity, including the transient copy while
/// the index grows and the buffer of the stream being inflated. The plan
/// (`PDF_MEMORY` in lib.rs) is this plus room for the walk's bitmap (an
/// eighth of a byte per object) and small change.
pub(crate) const MEMORY: usize = 72 << 20;
/// Object streams remembered while scanning (the ones still current, at
/// most [`MAX_STREAMS`], are inflated afterwards).
const MAX_STREAM_CANDIDATES: usize = 4 * MAX_STREAMS;
/// At most this many objects are read from one object stream's header
/// (writers put a few hundred in one).
const MAX_STREAM_OBJECTS: usize = 1 << 16;
/// The page-tree root is at depth 0; nodes deeper than this are not visited.
const MAX_DEPTH: u32 = 256;
/// `Entry::src` of an object whose body is in the file itself.
const IN_FILE: u16 = u16::MAX;

pub(crate) fn page_count(bytes: &[u8]) -> Option<u32> {
    let index = Index::build(bytes);
    match index.page_tree_root() {
        Some(root) => {
            let pages = index.walk(root);
            (pages > 0).then_some(pages)
        }
        None => index.page_objects(),
    }
}

/// An indexed object: where its body starts. Only complete dictionaries
/// and arrays are indexed, so parsing one again ends where it did.
#[derive(Clone, Copy)]
struct Entry {
    num: u32,
    /// The precedence of the definition: the offset of its `N G obj`
    /// header, or of its object stream's header.
    pos: u32,
    start: u32,
    /// [`IN_FILE`] or the index of the inflated object stream.
    src: u16,
    /// Noted while indexing, so that looking for catalogs or page objects
    /// among millions does not parse them again, and a page is counted
    /// without reading it.
    kind: Kind,
}

const ENTRY: usize = size_of::<Entry>();
const _: () = assert!(ENTRY == 16);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Page,
    Catalog,
    Other,
}

impl Kind {
    fn of(dict: &Dict<'_>) -> Self {
        if dict.is_type(b"Page") {
            Kind::Page
        } else if dict.is_type(b"Catalog") {
            Kind::Catalog
        } else {
            Kind::Other
        }
    }
}

/// An `N G obj` header: the object `num` starts at `start`, its body after
/// `obj` at `body`.
#[derive(Clone, Copy)]
struct Header {
    start: usize,
    body: usize,
    num: u32,
}

/// An object stream seen while scanning.
struct ObjStm {
    num: u32,
    pos: u32,
    data: (usize, usize),
    n: Option<u64>,
    first: u64,
}

struct Index<'a> {
    file: &'a [u8],
    /// Sorted by object number, one per number, once built.
    entries: Vec<Entry>,
    /// Inflated object streams that objects were indexed in.
    streams: Vec<Vec<u8>>,
    /// The `/Root` of the last trailer or cross-reference stream with one.
    root: Option<u32>,
    /// Bytes held, against [`MEMORY`].
    used: usize,
    /// No more objects fit.
    full: bool,
}

impl<'a> Index<'a> {
    fn build(file: &'a [u8]) -> Self {
        let mut index = Index {
            file,
            entries: Vec::new(),
            streams: Vec::new(),
            root: None,
            used: 0,
            full: false,
        };
        let mut objstms = Vec::new();
        index.scan_file(&mut objstms);
        index.compact();
        // A stream whose object was redefined later is stale.
        objstms.retain(|s| {
            index
                .slot(s.num)
                .and_then(|i| index.entries.get(i))
                .is_some_and(|e| e.src == IN_FILE && e.pos == s.pos)
        });
        index.index_object_streams(&objstms);
        index.compact();
        index
    }

    /// Sorts the entries by number and keeps the last definition of each.
    fn compact(&mut self) {
        let v = &mut self.entries;
        // The key is unique per entry, so the unstable sort is
        // deterministic; it allocates nothing.
        v.sort_unstable_by_key(|e| (e.num, e.pos, e.src, e.start));
        let mut kept = 0;
        for i in 0..v.len() {
            let last = match (v.get(i), v.get(i + 1)) {
                (Some(e), Some(next)) => e.num != next.num,
                _ => true,
            };
            if last {
                v.swap(kept, i);
                kept += 1;
            }
        }
        v.truncate(kept);
    }

    /// Adds an entry if it fits in [`MAX_OBJECTS`] and [`MEMORY`].
    fn push(&mut self, entry: Entry) -> bool {
        if self.entries.len() == self.entries.capacity() && !self.grow() {
            return false;
        }
        self.entries.push(entry);
        true
    }

    fn grow(&mut self) -> bool {
        if self.full {
            return false;
        }
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        let want = cap.saturating_mul(2).clamp(4096, MAX_OBJECTS);
        // While the vector moves, the old and the new buffers both exist.
        if want > len && self.used.saturating_add(want * ENTRY) <= MEMORY {
            self.entries.reserve_exact(want - len);
            self.used = self.used.saturating_sub(cap * ENTRY) + self.entries.capacity() * ENTRY;
            return true;
        }
        // Out of room: drop redefinitions, and go on only if that freed
        // enough (so compacting stays rare).
        self.compact();
        if self.entries.len() + cap / 8 <= cap {
            return true;
        }
        self.full = true;
        false
    }

    /// The entry of object `num`, once built.
    fn slot(&self, num: u32) -> Option<usize> {
        self.entries.binary_search_by_key(&num, |e| e.num).ok()
    }

    /// The one pass over the file: objects, and trailers between them.
    fn scan_file(&mut self, objstms: &mut Vec<ObjStm>) {
        let file = self.file;
        // No `endstream` at or after this offset (so it is searched once).
        let mut no_endstream_from = usize::MAX;
        let mut gap_from = 0;
        let mut cur = next_header(file, 0);
        while let Some(h) = cur {
            self.trailers(gap_from, h.start);
            let mut next = next_header(file, h.body);
            let limit = next.map_or(file.len(), |n| n.start);
            if u32::try_from(limit).is_err() {
                // Offsets are kept as u32: past 4 GiB nothing is indexed.
                return;
            }
            let end = self.file_object(h, limit, &mut no_endstream_from, objstms);
            if end > limit {
                // Headers inside the object's stream data are not objects.
                next = next_header(file, end);
            }
            gap_from = end;
            cur = next;
        }
        self.trailers(gap_from, file.len());
    }

    /// Indexes the object at `h` (its body ends by `limit`, the next
    /// header) if it is a complete dictionary or array; returns where its
    /// value (or stream) ends, which may be past `limit`.
    fn file_object(
        &mut self,
        h: Header,
        limit: usize,
        no_endstream_from: &mut usize,
        objstms: &mut Vec<ObjStm>,
    ) -> usize {
        let file = self.file;
        let mut lx = Lexer::new(file, h.body, limit);
        match lx.next() {
            Some(Tok::DictOpen) => {
                let Some(dict) = parse_dict(&mut lx) else {
                    return h.body;
                };
                let value_end = lx.pos;
                self.push_file(h, Kind::of(&dict));
                if dict.is_type(b"XRef") && dict.root.is_some() {
                    self.root = dict.root;
                }
                if !matches!(lx.next(), Some(Tok::Word(b"stream"))) {
                    return value_end;
                }
                let data = stream_data_start(file, lx.pos);
                let (data_end, end) = stream_end(file, data, dict.length, limit, no_endstream_from);
                if dict.is_type(b"ObjStm")
                    && dict.flate
                    && objstms.len() < MAX_STREAM_CANDIDATES
                    && let (Some(first), Ok(pos)) = (dict.first, u32::try_from(h.start))
                {
                    objstms.push(ObjStm {
                        num: h.num,
                        pos,
                        data: (data, data_end),
                        n: dict.n,
                        first,
                    });
                }
                end
            }
            // An indirect `/Kids` array.
            Some(Tok::ArrOpen) => {
                if skip_nested(&mut lx).is_none() {
                    return h.body;
                }
                self.push_file(h, Kind::Other);
                lx.pos
            }
            _ => h.body,
        }
    }

    fn push_file(&mut self, h: Header, kind: Kind) {
        if let (Ok(pos), Ok(start)) = (u32::try_from(h.start), u32::try_from(h.body)) {
            let _ = self.push(Entry {
                num: h.num,
                pos,
                start,
                src: IN_FILE,
                kind,
            });
        }
    }

    /// Trailer dictionaries in `from..to` (between objects).
    fn trailers(&mut self, from: usize, to: usize) {
        let file = self.file;
        let Some(area) = file.get(..to) else { return };
        let mut i = from;
        while let Some(p) = find(area, i, b"trailer") {
            i = p + 7;
            let before = p.checked_sub(1).and_then(|b| file.get(b));
            if before.is_some_and(|&c| !is_ws(c) && !is_delim(c))
                || file.get(i).is_some_and(|&c| !is_ws(c) && !is_delim(c))
            {
                continue;
            }
            let mut lx = Lexer::new(file, i, to);
            if matches!(lx.next(), Some(Tok::DictOpen)) {
                if let Some(dict) = parse_dict(&mut lx)
                    && dict.root.is_some()
                {
                    self.root = dict.root;
                }
                // Resume after what was parsed (even a failed parse), so
                // a flood of broken trailers stays linear.
                i = i.max(lx.pos);
            }
        }
    }

    /// Inflates the current object streams (in file order, within the caps)
    /// and indexes their objects as defined where the stream is.
    fn index_object_streams(&mut self, objstms: &[ObjStm]) {
        let mut total = 0usize;
        for s in objstms {
            let limit = MAX_STREAM_OUT
                .min(MAX_TOTAL_OUT.saturating_sub(total))
                .min(MEMORY.saturating_sub(self.used));
            if self.streams.len() >= MAX_STREAMS || limit == 0 || self.full {
                break;
            }
            let Some(raw) = self.file.get(s.data.0..s.data.1) else {
                continue;
            };
            let Ok(src) = u16::try_from(self.streams.len()) else {
                break;
            };
            // A truncated or over-long stream still yields what inflated
            // (padded with NULs, which are whitespace to the parser).
            let mut data = match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(raw, limit)
            {
                Ok(data) => data,
                Err(e) => e.output,
            };
            total = total.saturating_add(data.len());
            data.shrink_to_fit();
            self.used = self.used.saturating_add(data.capacity());
            let mut added = false;
            for (num, start, end) in objstm_entries(&data, s.n, s.first) {
                // As in the file, only complete dictionaries and arrays.
                if let Some(kind) = value_kind(&data, start, end) {
                    added |= self.push(Entry {
                        num,
                        pos: s.pos,
                        start,
                        src,
                        kind,
                    });
                }
            }
            if added {
                self.streams.push(data);
            } else {
                // Nothing in it: do not keep it.
                self.used = self.used.saturating_sub(data.capacity());
            }
        }
    }

    /// A lexer from the start of the body of the object in `slot`.
    fn open(&self, slot: usize) -> Option<Lexer<'_>> {
        let e = self.entries.get(slot)?;
        let buf: &[u8] = if e.src == IN_FILE {
            self.file
        } else {
            self.streams.get(usize::from(e.src))?
        };
        Some(Lexer::new(buf, usize::try_from(e.start).ok()?, buf.len()))
    }

    /// The object in `slot` as a dictionary, and the lexer (its buffer)
    /// after it.
    fn dict(&self, slot: usize) -> Option<(Lexer<'_>, Dict<'_>)> {
        let mut lx = self.open(slot)?;
        if !matches!(lx.next(), Some(Tok::DictOpen)) {
            return None;
        }
        let dict = parse_dict(&mut lx)?;
        Some((lx, dict))
    }

    /// The slot of a catalog's `/Pages`, if that object is indexed.
    fn pages_of(&self, catalog: usize) -> Option<usize> {
        let (_, dict) = self.dict(catalog)?;
        self.slot(dict.pages?)
    }

    fn page_tree_root(&self) -> Option<usize> {
        if let Some(root) = self.root.and_then(|r| self.slot(r))
            && let Some(pages) = self.pages_of(root)
        {
            return Some(pages);
        }
        // No usable trailer: the last catalog that leads to a page tree.
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == Kind::Catalog)
            .filter_map(|(slot, e)| Some(((e.pos, e.src, e.start), self.pages_of(slot)?)))
            .max_by_key(|&(order, _)| order)
            .map(|(_, pages)| pages)
    }

    /// The number of distinct page objects reached from `root`, depth
    /// first. The stack holds one frame per level (the rest of that level's
    /// kids), so it is at most [`MAX_DEPTH`] deep however wide the tree.
    fn walk(&self, root: usize) -> u32 {
        let mut seen = Seen::new(self.entries.len());
        let mut pages = 0u32;
        let mut stack: Vec<(Refs<'_>, u32)> = Vec::new();
        seen.insert(root);
        if let Some(kids) = self.visit(root, 0, &mut pages, &mut seen) {
            stack.push((kids, 1));
        }
        while let Some((kids, depth)) = stack.last_mut() {
            let depth = *depth;
            let Some(num) = kids.next() else {
                stack.pop();
                continue;
            };
            // Dangling references are skipped; each object is visited once.
            let Some(slot) = self.slot(num) else {
                continue;
            };
            if !seen.insert(slot) {
                continue;
            }
            if let Some(kids) = self.visit(slot, depth, &mut pages, &mut seen) {
                stack.push((kids, depth + 1));
            }
        }
        pages
    }

    /// Counts the node in `slot` if it is a page, else returns its kids
    /// (if it has any and is not at the depth limit).
    fn visit(&self, slot: usize, depth: u32, pages: &mut u32, seen: &mut Seen) -> Option<Refs<'_>> {
        if self.entries.get(slot)?.kind == Kind::Page {
            *pages = pages.saturating_add(1);
            return None;
        }
        let (lx, dict) = self.dict(slot)?;
        // A kid without /Type and without /Kids is a page too (pdf.js
        // takes any kid without /Kids for one): broken writers omit the
        // /Type of leaves.
        if dict.ty.is_none() && dict.kids.is_none() && depth > 0 {
            *pages = pages.saturating_add(1);
            return None;
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        match dict.kids? {
            Kids::Inline(start, end) => Some(Refs::new(Lexer::new(lx.buf, start, end))),
            Kids::Ref(num) => {
                let array = self.slot(num)?;
                if !seen.insert(array) {
                    return None;
                }
                let mut a = self.open(array)?;
                if !matches!(a.next(), Some(Tok::ArrOpen)) {
                    return None;
                }
                let start = a.pos;
                skip_nested(&mut a)?;
                Some(Refs::new(Lexer::new(a.buf, start, a.pos)))
            }
        }
    }

    /// Fallback without a page tree: the indexed `/Type /Page` objects.
    fn page_objects(&self) -> Option<u32> {
        let n = self.entries.iter().filter(|e| e.kind == Kind::Page).count();
        (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// The visited set of the walk: a bit per slot.
struct Seen(Vec<u64>);

impl Seen {
    fn new(slots: usize) -> Self {
        Seen(vec![0; slots.div_ceil(64)])
    }

    /// Marks `slot`; false if it already was.
    fn insert(&mut self, slot: usize) -> bool {
        let Some(word) = self.0.get_mut(slot / 64) else {
            return false;
        };
        let bit = 1u64 << (slot % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// The kind of the value at `data[start..end]`, if it is a complete
/// dictionary or array.
fn value_kind(data: &[u8], start: u32, end: u32) -> Option<Kind> {
    let mut lx = Lexer::new(
        data,
        usize::try_from(start).ok()?,
        usize::try_from(end).ok()?,
    );
    let kind = match lx.next()? {
        Tok::DictOpen => Kind::of(&parse_dict(&mut lx)?),
        Tok::ArrOpen => {
            skip_nested(&mut lx)?;
            Kind::Other
        }
        _ => return None,
    };
    Some(kind)
}

/// The objects of an inflated object stream: (number, start, end), with
/// the `/N` pairs `objnum offset` of its header (offsets from `/First`).
fn objstm_entries(data: &[u8], n: Option<u64>, first: u64) -> Vec<(u32, u32, u32)> {
    let Ok(first) = usize::try_from(first) else {
        return Vec::new();
    };
    let mut lx = Lexer::new(data, 0, first);
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    let n = n.map_or(MAX_STREAM_OBJECTS, |n| {
        usize::try_from(n).map_or(MAX_STREAM_OBJECTS, |n| n.min(MAX_STREAM_OBJECTS))
    });
    for _ in 0..n {
        let (Some(Tok::Int(num)), Some(Tok::Int(off))) = (lx.next(), lx.next()) else {
            break;
        };
        let at = usize::try_from(off)
            .ok()
            .and_then(|o| o.checked_add(first))
            .filter(|&at| at < data.len())
            .and_then(|at| u32::try_from(at).ok());
        if let (Ok(num), Some(at)) = (u32::try_from(num), at) {
            pairs.push((at, num));
        }
    }
    // Each object ends where the next one starts, so the ranges are
    // disjoint and parsing them all is linear; two objects claiming the
    // same offset keep the first.
    pairs.sort_by_key(|&(at, _)| at);
    pairs.dedup_by_key(|p| p.0);
    let data_end = u32::try_from(data.len()).unwrap_or(u32::MAX);
    pairs
        .iter()
        .enumerate()
        .map(|(i, &(at, num))| {
            let end = pairs.get(i + 1).map_or(data_end, |p| p.0);
            (num, at, end)
        })
        .collect()
}

/// The first `N G obj` header at or after `from`.
fn next_header(buf: &[u8], from: usize) -> Option<Header> {
    let mut i = from;
    loop {
        let p = find(buf, i, b"obj")?;
        i = p + 1;
        if buf.get(p + 3).is_some_and(|&c| !is_ws(c) && !is_delim(c)) {
            continue;
        }
        // Backwards: whitespace, generation, whitespace, number, then a
        // delimiter or the start of the file.
        let Some(gen_end) = skip_back(buf, from, p, is_ws, usize::MAX) else {
            continue;
        };
        let Some(gen_start) = skip_back(buf, from, gen_end, is_digit, 10) else {
            continue;
        };
        let Some(num_end) = skip_back(buf, from, gen_start, is_ws, usize::MAX) else {
            continue;
        };
        let Some(start) = skip_back(buf, from, num_end, is_digit, 10) else {
            continue;
        };
        let before = start.checked_sub(1).and_then(|b| buf.get(b));
        if before.is_some_and(|&c| !is_ws(c) && !is_delim(c)) {
            continue;
        }
        let Some(num) = buf
            .get(start..num_end)
            .and_then(int)
            .and_then(|n| u32::try_from(n).ok())
        else {
            continue;
        };
        return Some(Header {
            start,
            body: p + 3,
            num,
        });
    }
}

/// Moves back from `at` over at most `max` bytes matching `pred`, not
/// before `floor`; `None` unless at least one matched.
fn skip_back(
    buf: &[u8],
    floor: usize,
    at: usize,
    pred: fn(u8) -> bool,
    max: usize,
) -> Option<usize> {
    let mut i = at;
    while i > floor && at - i < max && buf.get(i - 1).is_some_and(|&c| pred(c)) {
        i -= 1;
    }
    (i < at).then_some(i)
}

/// Where the data of a stream whose `stream` keyword ends at `p` begins.
fn stream_data_start(buf: &[u8], mut p: usize) -> usize {
    if buf.get(p) == Some(&b'\r') {
        p += 1;
    }
    if buf.get(p) == Some(&b'\n') {
        p += 1;
    }
    p
}

/// The end of a stream's data and of the stream (after `endstream`): by a
/// direct `/Length` when `endstream` follows it, else by the next
/// `endstream`, else the stream runs to `limit`.
fn stream_end(
    buf: &[u8],
    data: usize,
    length: Option<u64>,
    limit: usize,
    no_endstream_from: &mut usize,
) -> (usize, usize) {
    if let Some(end) = length
        .and_then(|l| usize::try_from(l).ok())
        .and_then(|l| data.checked_add(l))
        .filter(|&end| end <= buf.len())
    {
        let mut k = end;
        while k < end.saturating_add(64) && buf.get(k).is_some_and(|&c| is_ws(c)) {
            k += 1;
        }
        if buf.get(k..).is_some_and(|r| r.starts_with(b"endstream")) {
            return (end, k + 9);
        }
    }
    if data < *no_endstream_from {
        match find(buf, data, b"endstream") {
            Some(p) => return (p, p + 9),
            None => *no_endstream_from = data,
        }
    }
    let end = limit.max(data);
    (end, end)
}

fn find(buf: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hit = buf
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)?;
    Some(from + hit)
}

fn is_ws(c: u8) -> bool {
    matches!(c, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

fn is_delim(c: u8) -> bool {
    b"()<>[]{}/%".contains(&c)
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// A non-negative integer (saturating), if `w` is all digits.
fn int(w: &[u8]) -> Option<u64> {
    if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(w.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Whether the raw name (without its `/`) is `want`, `#xx` escapes decoded.
fn name_is(raw: &[u8], want: &[u8]) -> bool {
    let hex = |c: Option<&u8>| c.and_then(|&c| char::from(c).to_digit(16));
    let mut want = want.iter();
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        i += 1;
        let mut c = c;
        if c == b'#'
            && let (Some(h), Some(l)) = (hex(raw.get(i)), hex(raw.get(i + 1)))
            && let Ok(b) = u8::try_from(h * 16 + l)
        {
            c = b;
            i += 2;
        }
        if want.next() != Some(&c) {
            return false;
        }
    }
    want.next().is_none()
}

/// A keyword that cannot be inside a dictionary: the dictionary was not
/// terminated.
fn is_structural(w: &[u8]) -> bool {
    matches!(
        w,
        b"obj" | b"endobj" | b"stream" | b"endstream" | b"trailer" | b"xref" | b"startxref"
    )
}

#[derive(Clone, Copy)]
enum Tok<'a> {
    Int(u64),
    /// Without its `/`, escapes not decoded.
    Name(&'a [u8]),
    /// Any other regular token: `R`, `true`, `obj`, a real number...
    Word(&'a [u8]),
    DictOpen,
    DictClose,
    ArrOpen,
    ArrClose,
    Str,
    Other,
}

/// Tokens of `buf[pos..end]`. `next` is `None` at the end and on an
/// unterminated string.
#[derive(Clone, Copy)]
struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Lexer<'a> {
    fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        Lexer {
            buf,
            pos: pos.min(end),
            end,
        }
    }

    fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.buf.get(self.pos).copied()
        } else {
            None
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'%' {
                while self.peek().is_some_and(|c| c != b'\r' && c != b'\n') {
                    self.pos += 1;
                }
            } else if is_ws(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn regular(&mut self) {
        while self.peek().is_some_and(|c| !is_ws(c) && !is_delim(c)) {
            self.pos += 1;
        }
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_space();
        let start = self.pos;
        let tok = match self.bump()? {
            b'(' => {
                // Nested parentheses balance; a backslash escapes the next
                // byte, so `\)` and `>>` inside do not end anything.
                let mut depth = 1usize;
                while depth > 0 {
                    match self.bump()? {
                        b'\\' => {
                            self.bump()?;
                        }
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                }
                Tok::Str
            }
            b'<' if self.peek() == Some(b'<') => {
                self.pos += 1;
                Tok::DictOpen
            }
            b'<' => {
                while self.bump()? != b'>' {}
                Tok::Str
            }
            b'>' if self.peek() == Some(b'>') => {
                self.pos += 1;
                Tok::DictClose
            }
            b'[' => Tok::ArrOpen,
            b']' => Tok::ArrClose,
            b'/' => {
                self.regular();
                Tok::Name(self.buf.get(start + 1..self.pos).unwrap_or_default())
            }
            c if is_delim(c) => Tok::Other,
            _ => {
                self.regular();
                let w = self.buf.get(start..self.pos).unwrap_or_default();
                int(w).map_or(Tok::Word(w), Tok::Int)
            }
        };
        Some(tok)
    }
}

/// Skips to the end of an array or dictionary whose opening token was just
/// read (brackets of both kinds count together); `None` if it does not end.
fn skip_nested(lx: &mut Lexer<'_>) -> Option<()> {
    let mut depth = 1usize;
    loop {
        match lx.next()? {
            Tok::ArrOpen | Tok::DictOpen => depth += 1,
            Tok::ArrClose | Tok::DictClose => {
                depth -= 1;
                if depth == 0 {
                    return Some(());
                }
            }
            Tok::Word(w) if is_structural(w) => return None,
            _ => {}
        }
    }
}

enum Kids {
    /// The token range of an inline array.
    Inline(usize, usize),
    /// An indirect array.
    Ref(u32),
}

/// What the page count needs of a dictionary.
#[derive(Default)]
struct Dict<'a> {
    ty: Option<&'a [u8]>,
    kids: Option<Kids>,
    pages: Option<u32>,
    root: Option<u32>,
    length: Option<u64>,
    n: Option<u64>,
    first: Option<u64>,
    /// `/Filter /FlateDecode` (alone).
    flate: bool,
}

impl Dict<'_> {
    fn is_type(&self, t: &[u8]) -> bool {
        self.ty.is_some_and(|n| name_is(n, t))
    }
}

enum Val<'a> {
    Int(u64),
    Ref(u32),
    Name(&'a [u8]),
    Array(usize, usize),
    /// The dictionary's `>>` where a value was expected.
    End,
    Other,
}

fn value<'a>(lx: &mut Lexer<'a>) -> Option<Val<'a>> {
    let val = match lx.next()? {
        Tok::Int(n) => {
            let mut look = *lx;
            match (look.next(), look.next()) {
                (Some(Tok::Int(_)), Some(Tok::Word(b"R"))) => {
                    *lx = look;
                    u32::try_from(n).map_or(Val::Other, Val::Ref)
                }
                _ => Val::Int(n),
            }
        }
        Tok::Name(n) => Val::Name(n),
        Tok::ArrOpen => {
            let start = lx.pos;
            skip_nested(lx)?;
            Val::Array(start, lx.pos)
        }
        Tok::DictOpen => {
            skip_nested(lx)?;
            Val::Other
        }
        Tok::DictClose => Val::End,
        Tok::Word(w) if is_structural(w) => return None,
        _ => Val::Other,
    };
    Some(val)
}

/// Parses a dictionary whose `<<` was just read, up to its `>>`; `None` if
/// it does not end (within the lexer's range).
fn parse_dict<'a>(lx: &mut Lexer<'a>) -> Option<Dict<'a>> {
    let mut d = Dict::default();
    loop {
        let key = match lx.next()? {
            Tok::DictClose => return Some(d),
            Tok::Name(k) => k,
            Tok::ArrOpen | Tok::DictOpen => {
                skip_nested(lx)?;
                continue;
            }
            Tok::Word(w) if is_structural(w) => return None,
            _ => continue,
        };
        let val = value(lx)?;
        match val {
            Val::End => return Some(d),
            Val::Name(n) if name_is(key, b"Type") => d.ty = Some(n),
            Val::Array(s, e) if name_is(key, b"Kids") => d.kids = Some(Kids::Inline(s, e)),
            Val::Ref(r) if name_is(key, b"Kids") => d.kids = Some(Kids::Ref(r)),
            Val::Ref(r) if name_is(key, b"Pages") => d.pages = Some(r),
            Val::Ref(r) if name_is(key, b"Root") => d.root = Some(r),
            Val::Int(n) if name_is(key, b"Length") => d.length = Some(n),
            Val::Int(n) if name_is(key, b"N") => d.n = Some(n),
            Val::Int(n) if name_is(key, b"First") => d.first = Some(n),
            Val::Name(n) if name_is(key, b"Filter") => d.flate = name_is(n, b"FlateDecode"),
            Val::Array(s, e) if name_is(key, b"Filter") => {
                let mut a = Lexer::new(lx.buf, s, e);
                d.flate = matches!(a.next(), Some(Tok::Name(n)) if name_is(n, b"FlateDecode"))
                    && matches!(a.next(), Some(Tok::ArrClose));
            }
            _ => {}
        }
    }
}

/// The object numbers of the `N G R` references among the tokens.
struct Refs<'a> {
    lx: Lexer<'a>,
    /// The last two integers, if the last tokens were integers.
    last: (Option<u64>, Option<u64>),
}

impl<'a> Refs<'a> {
    fn new(lx: Lexer<'a>) -> Self {
        Refs {
            lx,
            last: (None, None),
        }
    }
}

impl Iterator for Refs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            match self.lx.next()? {
                Tok::Int(n) => self.last = (self.last.1, Some(n)),
                Tok::Word(b"R") => {
                    let (num, generation) = std::mem::take(&mut self.last);
                    if let (Some(num), Some(_)) = (num, generation)
                        && let Ok(num) = u32::try_from(num)
                    {
                        return Some(num);
                    }
                }
                _ => self.last = (None, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Writes a PDF object by object; `trailer` adds a correct xref
    /// section for the objects written since the last one.
    struct Pdf {
        out: Vec<u8>,
        section: Vec<(u32, usize)>,
        last_xref: Option<usize>,
    }

    impl Pdf {
        fn new() -> Self {
            Pdf {
                out: b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec(),
                section: Vec::new(),
                last_xref: None,
            }
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.out.extend_from_slice(bytes);
            self
        }

        fn obj_bytes(mut self, num: u32, body: &[u8]) -> Self {
            self.section.push((num, self.out.len()));
            self.out
                .extend_from_slice(format!("{num} 0 obj\n").as_bytes());
            self.out.extend_from_slice(body);
            self.out.extend_from_slice(b"\nendobj\n");
            self
        }

        fn obj(self, num: u32, body: &str) -> Self {
            self.obj_bytes(num, body.as_bytes())
        }

        fn stream(self, num: u32, dict: &str, data: &[u8]) -> Self {
            let mut body = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
            body.extend_from_slice(data);
            body.extend_from_slice(b"\nendstream");
            self.obj_bytes(num, &body)
        }

        fn trailer(mut self, dict: &str) -> Self {
            let at = self.out.len();
            let mut s = String::from("xref\n0 1\n0000000000 65535 f \n");
            for (num, off) in self.section.drain(..) {
                s += &format!("{num} 1\n{off:010} 00000 n \n");
            }
            let prev = self
                .last_xref
                .map(|p| format!(" /Prev {p}"))
                .unwrap_or_default();
            s += &format!("trailer\n<< /Size 100 {dict}{prev} >>\nstartxref\n{at}\n%%EOF\n");
            self.last_xref = Some(at);
            self.raw(s.as_bytes())
        }

        fn bytes(self) -> Vec<u8> {
            self.out
        }
    }

    /// A catalog (1), a page-tree root (2) and `pages` pages (3...).
    fn simple(pages: u32) -> Pdf {
        let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
        let mut pdf = Pdf::new().obj(1, "<< /Type /Catalog /Pages 2 0 R >>").obj(
            2,
            &format!(
                "<< /Type /Pages /Kids [{}] /Count {pages} >>",
                kids.join(" ")
            ),
        );
        for i in 0..pages {
            pdf = pdf.obj(
                i + 3,
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            );
        }
        pdf
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
    }

    /// An object stream holding `objs` (number, body).
    fn objstm(objs: &[(u32, &str)]) -> (String, Vec<u8>) {
        let mut header = String::new();
        let mut body = String::new();
        for (num, text) in objs {
            header += &format!("{num} {} ", body.len());
            body += text;
            body += "\n";
        }
        let dict = format!(
            "/Type /ObjStm /N {} /First {} /Filter /FlateDecode",
            objs.len(),
            header.len()
        );
        (dict, zlib(format!("{header}{body}").as_bytes()))
    }

    #[test]
    fn counts_the_pages_of_a_simple_file() {
        assert_eq!(
            page_count(&simple(3).trailer("/Root 1 0 R").bytes()),
            Some(3)
        );
        assert_eq!(
            page_count(&simple(1).trailer("/Root 1 0 R").bytes()),
            Some(1)
        );
        // No xref table and no trailer at all: the catalog is found anyway.
        assert_eq!(page_count(&simple(3).bytes()), Some(3));
    }

    #[test]
    fn count_is_never_trusted() {
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids [3 0 R] /Count 4294967295 >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(1));

        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 0 >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            .obj(4, "<< /Type /Page /Parent 2 0 R >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    #[test]
    fn a_looping_tree_terminates_with_the_distinct_pages() {
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 3 >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            // An interior node whose kids point back at the root and itself.
            .obj(
                4,
                "<< /Type /Pages /Parent 2 0 R /Kids [5 0 R 2 0 R 4 0 R] /Count 99 >>",
            )
            .obj(5, "<< /Type /Page /Parent 4 0 R >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));

        // The root is its own only kid: no page at all.
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids [2 0 R] /Count 1 >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), None);
    }

    #[test]
    fn a_kid_listed_twice_counts_once() {
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(
                2,
                "<< /Type /Pages /Kids [3 0 R 3 0 R 4 0 R 5 0 R] /Count 4 >>",
            )
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            .obj(4, "<< /Type /Page /Parent 2 0 R >>")
            // A second path to page 3.
            .obj(5, "<< /Type /Pages /Parent 2 0 R /Kids [3 0 R] /Count 1 >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    /// A chain of `levels` `/Pages` nodes (2, 3, ...) with one page at
    /// depth `levels`.
    fn chain(levels: u32) -> Vec<u8> {
        let mut out =
            String::from("%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
        for k in 0..levels {
            out += &format!(
                "{} 0 obj\n<< /Type /Pages /Kids [{} 0 R] /Count 1 >>\nendobj\n",
                k + 2,
                k + 3
            );
        }
        out += &format!("{} 0 obj\n<< /Type /Page >>\nendobj\n", levels + 2);
        out += "trailer\n<< /Root 1 0 R >>\n%%EOF\n";
        out.into_bytes()
    }

    #[test]
    fn depth_is_limited_without_recursion() {
        assert_eq!(page_count(&chain(3)), Some(1));
        // The root is at depth 0: a page at depth 256 is reached, one at 257
        // is not, and a tree that reaches no page has no count.
        assert_eq!(page_count(&chain(MAX_DEPTH)), Some(1));
        assert_eq!(page_count(&chain(MAX_DEPTH + 1)), None);

        let deep = chain(100_000);
        let t = Instant::now();
        assert_eq!(page_count(&deep), None);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn objects_in_object_streams() {
        let (dict, data) = objstm(&[
            (1, "<< /Type /Catalog /Pages 2 0 R >>"),
            (2, "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 42 >>"),
            (3, "<< /Type /Page /Parent 2 0 R >>"),
            (4, "<< /Type /Page /Parent 2 0 R >>"),
        ]);
        // The root is named by a cross-reference stream.
        let pdf = Pdf::new()
            .stream(10, &dict, &data)
            .stream(
                11,
                "/Type /XRef /Root 1 0 R /Size 12 /W [1 2 1]",
                b"\x01\x00\x0f\x00",
            )
            .raw(b"startxref\n0\n%%EOF\n");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
        // No trailer at all: the catalog inside the stream is found.
        let pdf = Pdf::new().stream(10, &dict, &data);
        assert_eq!(page_count(&pdf.bytes()), Some(2));
        // `[/FlateDecode]` and an indirect /Length (searched `endstream`).
        let mut body = format!(
            "<< {} /Length 99 0 R >>\nstream\n",
            dict.replace("/FlateDecode", "[/FlateDecode]")
        )
        .into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\nendstream");
        let pdf = Pdf::new()
            .obj_bytes(10, &body)
            .obj(99, &data.len().to_string())
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));

        // As in the integration test: a compressed tree claiming 42 pages
        // with one page and no catalog: the one page object.
        let (dict, data) = objstm(&[
            (2, "<< /Type /Pages /Kids [3 0 R] /Count 42 >>"),
            (3, "<< /Type /Page /Parent 2 0 R >>"),
        ]);
        assert_eq!(
            page_count(&Pdf::new().stream(7, &dict, &data).bytes()),
            Some(1)
        );

        // A stream that is not FlateDecode is not inflated.
        let (dict, data) = objstm(&[(3, "<< /Type /Page >>")]);
        let dict = dict.replace("/FlateDecode", "/LZWDecode");
        assert_eq!(
            page_count(&Pdf::new().stream(7, &dict, &data).bytes()),
            None
        );
    }

    #[test]
    fn an_incremental_update_wins() {
        let base = simple(1).trailer("/Root 1 0 R");
        let pdf = base
            .obj(2, "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>")
            .obj(4, "<< /Type /Page /Parent 2 0 R >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));

        // The update puts the new tree in an object stream: it is later than
        // the direct definition, so it wins too...
        let (dict, data) = objstm(&[
            (2, "<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>"),
            (4, "<< /Type /Page /Parent 2 0 R >>"),
            (5, "<< /Type /Page /Parent 2 0 R >>"),
        ]);
        let updated = simple(1)
            .trailer("/Root 1 0 R")
            .stream(20, &dict, &data)
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&updated.bytes()), Some(3));
        // ...and a direct definition after the stream wins over it.
        let updated = simple(1)
            .trailer("/Root 1 0 R")
            .stream(20, &dict, &data)
            .trailer("/Root 1 0 R")
            .obj(2, "<< /Type /Pages /Kids [3 0 R] /Count 3 >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&updated.bytes()), Some(1));
        // A redefined object stream is stale: its objects are not indexed.
        let updated = simple(1)
            .stream(20, &dict, &data)
            .obj(20, "<< /Type /Metadata >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&updated.bytes()), Some(1));
    }

    #[test]
    fn indirect_kids() {
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids 6 0 R /Count 2 >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            .obj(4, "<< /Type /Page /Parent 2 0 R >>")
            .obj(6, "[3 0 R 4 0 R 3 0 R]")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    #[test]
    fn strings_comments_and_streams_do_not_confuse() {
        let content = b"BT (<< /Type /Page >>) Tj ET\n9 0 obj\n<< /Type /Page >>\nendobj\n\
            10 0 obj << /Type /Catalog /Pages 11 0 R >> endobj\n\x00\xff>>";
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(
                2,
                "<< /Type /Pages % /Type /Page >> here\n /T (x >> y \\( z) /U <3e> /Kids [3 0 R] >>",
            )
            .obj(
                3,
                "<< /Title (a >> b \\) << c /Type /Page (nested >>) ) /H <3e3e> \
                 /Type /Page /Contents [6 0 R 7 0 R] /Extra << /Inner << /Type /Pages >> >> >>",
            )
            .stream(6, "", content)
            // An indirect /Length: `endstream` is searched.
            .obj_bytes(
                7,
                &[b"<< /Length 8 0 R >>\nstream\n".as_slice(), content, b"\nendstream"].concat(),
            )
            .obj(8, &content.len().to_string())
            .trailer("/Root 1 0 R");
        let bytes = pdf.bytes();
        assert_eq!(page_count(&bytes), Some(1));
        // Without the catalog, the fallback counts page objects: still one,
        // the text in the streams and strings is not an object.
        let text = String::from_utf8_lossy(&bytes).replace("/Type /Catalog", "/Type /Nope");
        let bytes = text.into_bytes();
        assert_eq!(page_count(&bytes), Some(1));
    }

    #[test]
    fn a_header_inside_a_string_does_not_shadow_an_object() {
        let pdf = simple(2)
            .obj(9, "<< /Type /Annot /Contents (see 3 0 obj for details) >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    #[test]
    fn names_are_delimited() {
        let pdf = Pdf::new()
            .obj(1, "<</Type/Catalog/Pages 2 0 R>>")
            .obj(2, "<</Type/Pages/Kids[3 0 R 4 0 R 5 0 R 6 0 R 7 0 R]>>")
            .obj(3, "<</Type/Page>>")
            .obj(4, "<</Type /P#61ge>>")
            .obj(5, "<</Type /PageLabels>>")
            .obj(6, "<</Type /Pagex /Kids []>>")
            .obj(7, "<</Type/Pages/Kids[]>>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    #[test]
    fn a_kid_without_type_or_kids_is_a_page() {
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Kids [3 0 R 4 0 R] >>")
            .obj(3, "<< /MediaBox [0 0 10 10] >>")
            .obj(4, "<< /Kids [5 0 R] >>")
            .obj(5, "<< /Type /Page >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
    }

    #[test]
    fn which_catalog() {
        // The trailer's root wins over a later decoy catalog...
        let pdf = simple(2)
            .obj(20, "<< /Type /Catalog /Pages 21 0 R >>")
            .obj(21, "<< /Type /Pages /Kids [22 0 R] >>")
            .obj(22, "<< /Type /Page >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
        // ...without a trailer, the last catalog is used...
        let pdf = simple(2)
            .obj(20, "<< /Type /Catalog /Pages 21 0 R >>")
            .obj(21, "<< /Type /Pages /Kids [22 0 R] >>")
            .obj(22, "<< /Type /Page >>");
        assert_eq!(page_count(&pdf.bytes()), Some(1));
        // ...as when the trailer's root does not resolve...
        let pdf = simple(2).trailer("/Root 77 0 R");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
        // ...and the last trailer with a /Root counts (linearized files have
        // it in the first one only).
        let pdf = simple(3).trailer("/Root 1 0 R").trailer("");
        assert_eq!(page_count(&pdf.bytes()), Some(3));
    }

    #[test]
    fn no_catalog_falls_back_to_page_objects() {
        let pdf = Pdf::new()
            .obj(2, "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 12 >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R >>")
            .obj(4, "<< /Type /Page /Parent 2 0 R >>")
            .obj(3, "<< /Type /Page /Parent 2 0 R /Rotate 90 >>");
        assert_eq!(page_count(&pdf.bytes()), Some(2));
        // The integration test's tree without pages: nothing to count.
        let tree = b"%PDF-1.7\n2 0 obj\n<</Type/Pages/Kids[4 0 R 5 0 R]/Count 12>>\nendobj\n\
            4 0 obj\n<</Type/Pages/Parent 2 0 R/Kids[]/Count 7>>\nendobj\n\
            5 0 obj\n<</Type/Pages/Parent 2 0 R/Kids[]/Count 5>>\nendobj\n%%EOF\n";
        assert_eq!(page_count(tree), None);
        // A catalog whose tree is empty: None, not a fallback.
        let pdf = Pdf::new()
            .obj(1, "<< /Type /Catalog /Pages 2 0 R >>")
            .obj(2, "<< /Type /Pages /Kids [9 0 R] /Count 1 >>")
            .obj(3, "<< /Type /Page >>")
            .trailer("/Root 1 0 R");
        assert_eq!(page_count(&pdf.bytes()), None);
    }

    #[test]
    fn garbage_and_truncation() {
        for bytes in [
            b"".as_slice(),
            b"%PDF-",
            b"%PDF-1.4\ngarbage",
            b"obj",
            b"1 0 obj",
            b"1 0 obj << /Type /Page",
            b"1 0 obj << /Type /Page (",
            b"1 0 obj << /Type /Page <",
            b"trailer << /Root 1 0 R >>",
            b"4294967296 0 obj << /Type /Page >> endobj",
            b"99999999999999999999 0 obj << /Type /Page >> endobj",
            b"1 0 obj << /Type /ObjStm /N 99999999999 /First 99999999999999999999 /Filter /FlateDecode /Length 5 >> stream\nxxxxx\nendstream endobj",
        ] {
            assert_eq!(page_count(bytes), None, "{}", String::from_utf8_lossy(bytes));
        }
        // A complete page object is one, whatever follows.
        assert_eq!(page_count(b"1 0 obj<</Type/Page>>"), Some(1));
        assert_eq!(page_count(b"1 0 obj << /Type /Page >> stream\r"), Some(1));
        let full = simple(3).trailer("/Root 1 0 R").bytes();
        for cut in 0..full.len() {
            let n = page_count(&full[..cut]);
            assert!(n.is_none_or(|n| n <= 3), "cut at {cut}: {n:?}");
        }
        // A flood of unterminated dictionaries and strings stays fast.
        let mut flood = b"%PDF-1.4\n".to_vec();
        for i in 0..50_000 {
            flood.extend_from_slice(
                format!("{i} 0 obj << /Type /Pages /Kids [ (trailer << ").as_bytes(),
            );
        }
        let t = Instant::now();
        assert_eq!(page_count(&flood), None);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn mutated_files_do_not_panic() {
        let (dict, data) = objstm(&[
            (1, "<< /Type /Catalog /Pages 2 0 R >>"),
            (2, "<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>"),
            (3, "<< /Type /Page /Parent 2 0 R >>"),
        ]);
        let seeds = [
            simple(4).trailer("/Root 1 0 R").bytes(),
            Pdf::new()
                .stream(10, &dict, &data)
                .obj(5, "<< /Type /Page /Parent 2 0 R (x >>) >>")
                .obj(6, "[3 0 R 5 0 R]")
                .stream(7, "", b"BT (3 0 obj) Tj ET")
                .trailer("/Root 1 0 R")
                .bytes(),
            chain(40),
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % (n.max(1) as u64)).unwrap_or(0)
        };
        let tokens: [&[u8]; 12] = [
            b"(",
            b")",
            b"<<",
            b">>",
            b"<",
            b"[",
            b"]",
            b"%",
            b"\\",
            b" 0 obj ",
            b"endstream",
            b" R ",
        ];
        for i in 0..4000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rand(4) {
                let at = rand(b.len());
                match rand(6) {
                    0 => b.truncate(at),
                    1 => {
                        if let Some(c) = b.get_mut(at) {
                            *c = u8::try_from(rand(256)).unwrap_or(0);
                        }
                    }
                    2 => {
                        let t = tokens[rand(tokens.len())];
                        b.splice(at..at, t.iter().copied());
                    }
                    3 => {
                        let end = (at + rand(64)).min(b.len());
                        b.drain(at..end);
                    }
                    4 => {
                        let from = rand(b.len());
                        let end = (from + rand(200)).min(b.len());
                        let chunk = b[from..end].to_vec();
                        b.splice(at..at, chunk);
                    }
                    _ => {
                        let digits = rand(1_000_000).to_string();
                        b.splice(at..at, digits.bytes());
                    }
                }
            }
            let _ = page_count(&b);
        }
    }
}
