//! The header section: an ordered index of raw header fields, with typed access on demand.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::TypedHeader;
use crate::text::{ascii, split_list, trim_lws};
use crate::{Error, HeaderName};

/// Where a name or value lives: a span of the received message, or (with the top bit of
/// `start` set) of the text added since. Spans keep a parse free of reference counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    const ADDED: u32 = 1 << 31;
    /// The largest offset a span can hold: messages larger than this cannot be indexed.
    pub(crate) const MAX: usize = (Self::ADDED - 1) as usize;

    pub(crate) fn received(start: usize, end: usize) -> Span {
        debug_assert!(end <= Self::MAX);
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// One indexed header field (24 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) name: HeaderName,
    pub(crate) line: u32,
    pub(crate) raw_name: Span,
    pub(crate) value: Span,
}

/// The header fields of a message, in the order they arrived.
///
/// A parsed message indexes its header fields without copying them: each field is a span of
/// the received bytes. Nothing is interpreted until asked for: [`Headers::typed`] and
/// [`Headers::typed_all`] parse values into the types of [`crate::header`], borrowing from the
/// message. Extension headers and unknown values are kept byte for byte.
#[derive(Clone, Default)]
pub struct Headers {
    /// The received message.
    buf: Bytes,
    /// Text added since (names and values of new fields, a new Request-URI...).
    added: Vec<u8>,
    entries: Vec<Entry>,
}

/// One header field: its name as classified, its name as written, and its value (leading and
/// trailing white space removed; folded lines are kept as they came).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The classified name.
    pub name: HeaderName,
    /// The name as written in the message (for example `v` or `VIA` for Via).
    pub raw_name: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The line of the message where the field starts (1 is the start line), 0 if the field
    /// was added rather than parsed.
    pub line: u32,
}

impl Headers {
    /// An empty header section.
    pub fn new() -> Headers {
        Headers::default()
    }

    pub(crate) fn from_parts(buf: Bytes, entries: Vec<Entry>) -> Headers {
        Headers {
            buf,
            added: Vec::new(),
            entries,
        }
    }

    /// Stores text that was not received, for a field or a start line element.
    pub(crate) fn add_text(&mut self, text: &[u8]) -> Span {
        let start = self.added.len();
        self.added.extend_from_slice(text);
        let end = self.added.len().min(Span::MAX);
        Span {
            start: start.min(Span::MAX) as u32 | Span::ADDED,
            end: end as u32 | Span::ADDED,
        }
    }

    /// The text of a span; empty if the span is not of this message (never panics).
    pub(crate) fn text(&self, span: Span) -> &[u8] {
        let range = (span.start & !Span::ADDED) as usize..(span.end & !Span::ADDED) as usize;
        let store: &[u8] = if span.start & Span::ADDED == 0 {
            &self.buf
        } else {
            &self.added
        };
        store.get(range).unwrap_or_default()
    }

    /// Number of header fields (lines, not comma-separated values).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = Field<'_>> {
        self.entries.iter().map(|e| self.field(e))
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: HeaderName) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| self.text(e.value))
    }

    /// The value of the first field with this name, compared without case; works for
    /// extension headers too (compact forms are not expanded: use [`Headers::get`]).
    pub fn get_by_name(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| self.text(e.raw_name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|e| self.text(e.value))
    }

    /// Every field called `name`, in order.
    pub fn get_all(&self, name: HeaderName) -> impl Iterator<Item = Field<'_>> {
        self.entries
            .iter()
            .filter(move |e| e.name == name)
            .map(|e| self.field(e))
    }

    /// How many fields are called `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.entries.iter().filter(|e| e.name == name).count()
    }

    /// Whether a field called `name` is present.
    pub fn contains(&self, name: HeaderName) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// The first value of header `H`, parsed: for a list header, the first element of the
    /// first field. `None` if the header is absent.
    pub fn typed<'a, H: TypedHeader<'a>>(&'a self) -> Option<Result<H, Error>> {
        let e = self.entries.iter().find(|e| e.name == H::NAME)?;
        let value = self.text(e.value);
        let first = if !H::NAME.is_list() {
            value
        } else if value.is_empty() && H::MAY_BE_EMPTY {
            // An empty field holds no element: the first one is on a later line.
            return self.typed_all::<H>().next();
        } else {
            split_list(value).next().unwrap_or_default()
        };
        Some(H::parse(first).map_err(|err| err.at_line(e.line)))
    }

    /// Every value of header `H`, across fields and, for list headers, across commas.
    pub fn typed_all<'a, H: TypedHeader<'a>>(&'a self) -> TypedIter<'a, H> {
        TypedIter {
            headers: self,
            index: 0,
            list: None,
            _marker: std::marker::PhantomData,
        }
    }

    /// Appends a field of a known name. An extension header has no name to print here: use
    /// [`Headers::push_named`]; `HeaderName::Other` is ignored.
    pub fn push(&mut self, name: HeaderName, value: impl AsRef<[u8]>) {
        self.insert_at(self.entries.len(), name, value.as_ref());
    }

    /// Appends a field by name, spelled as given: how extension headers are added (the name
    /// is classified, so `"Via"` still counts as [`HeaderName::Via`]).
    pub fn push_named(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let kind = HeaderName::from_bytes(name.as_bytes());
        let raw_name = self.add_text(name.as_bytes());
        let value = self.add_text(trim_lws(value.as_ref()));
        self.entries.push(Entry {
            name: kind,
            line: 0,
            raw_name,
            value,
        });
    }

    /// Inserts a field of a known name before the first field of the same name (or at the
    /// top if there is none): where a new Via or Record-Route goes.
    pub fn push_front(&mut self, name: HeaderName, value: impl AsRef<[u8]>) {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .unwrap_or(0);
        self.insert_at(at, name, value.as_ref());
    }

    /// Replaces every field of a known name with one field holding `value`, in the place of
    /// the first one (or at the end).
    pub fn set(&mut self, name: HeaderName, value: impl AsRef<[u8]>) {
        let at = self.entries.iter().position(|e| e.name == name);
        self.remove(name);
        self.insert_at(at.unwrap_or(self.entries.len()), name, value.as_ref());
    }

    /// Replaces the value of the first field called `name` (a known name), keeping its place
    /// and spelling; appends a field if there is none. How the top Via gets `received`.
    pub fn set_first(&mut self, name: HeaderName, value: impl AsRef<[u8]>) {
        let value = trim_lws(value.as_ref());
        match self.entries.iter().position(|e| e.name == name) {
            Some(i) => {
                let span = self.add_text(value);
                self.entries[i].value = span;
            }
            None => self.push(name, value),
        }
    }

    /// Removes every field called `name`; returns how many there were.
    pub fn remove(&mut self, name: HeaderName) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        before - self.entries.len()
    }

    /// Removes the first field called `name`; returns whether there was one.
    pub fn remove_first(&mut self, name: HeaderName) -> bool {
        match self.entries.iter().position(|e| e.name == name) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Bytes this header section takes on the wire, the blank line after it excluded.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|e| self.text(e.raw_name).len() + 2 + self.text(e.value).len() + 2)
            .sum()
    }

    /// Writes `Name: value CRLF` for every field.
    pub fn encode(&self, out: &mut BytesMut) {
        for e in &self.entries {
            out.put_slice(self.text(e.raw_name));
            out.put_slice(b": ");
            out.put_slice(self.text(e.value));
            out.put_slice(b"\r\n");
        }
    }

    fn insert_at(&mut self, at: usize, name: HeaderName, value: &[u8]) {
        debug_assert!(
            name != HeaderName::Other,
            "extension headers need push_named"
        );
        if name == HeaderName::Other {
            return;
        }
        let raw_name = self.add_text(name.as_str().as_bytes());
        let value = self.add_text(trim_lws(value));
        self.entries.insert(
            at,
            Entry {
                name,
                line: 0,
                raw_name,
                value,
            },
        );
    }

    fn field(&self, e: &Entry) -> Field<'_> {
        Field {
            name: e.name,
            raw_name: self.text(e.raw_name),
            value: self.text(e.value),
            line: e.line,
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|h| {
                format!(
                    "{}: {}",
                    String::from_utf8_lossy(h.raw_name),
                    String::from_utf8_lossy(h.value)
                )
            }))
            .finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.name == b.name && a.raw_name == b.raw_name && a.value == b.value)
    }
}

impl Eq for Headers {}

impl Field<'_> {
    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(self.value).ok()
    }

    /// The name as written, as text (header names are tokens, so ASCII).
    pub fn name_str(&self) -> &str {
        ascii(self.raw_name)
    }
}

/// Iterator behind [`Headers::typed_all`]: yields each value parsed, or the error that names
/// the line and what was expected.
pub struct TypedIter<'a, H> {
    headers: &'a Headers,
    index: usize,
    list: Option<(u32, crate::text::ListIter<'a>)>,
    _marker: std::marker::PhantomData<fn() -> H>,
}

impl<'a, H: TypedHeader<'a>> Iterator for TypedIter<'a, H> {
    type Item = Result<H, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((line, items)) = &mut self.list {
                if let Some(item) = items.next() {
                    let line = *line;
                    return Some(H::parse(item).map_err(|e| e.at_line(line)));
                }
                self.list = None;
            }
            let headers = self.headers;
            let e = loop {
                let e = headers.entries.get(self.index)?;
                self.index += 1;
                if e.name == H::NAME {
                    break e;
                }
            };
            // Parsed values were trimmed by the parser, added ones by `add_value`.
            let value = headers.text(e.value);
            if H::NAME.is_list() {
                if value.is_empty() && H::MAY_BE_EMPTY {
                    continue;
                }
                self.list = Some((e.line, split_list(value)));
                continue;
            }
            return Some(H::parse(value).map_err(|err| err.at_line(e.line)));
        }
    }
}
