//! Lexical building blocks of the RFC 3261 grammar (§25.1): character classes, linear white
//! space, tokens, quoted strings and a small scanner that the typed header parsers share.
//!
//! Header values reach the typed parsers already cut out of the message, so a folded line
//! (`CRLF 1*WSP`) is just white space here: CR and LF count as LWS inside a value.

/// Character classes, one bit each, in a 256-entry table.
const TOKEN: u8 = 1; // token chars: alphanum - . ! % * _ + ` ' ~
const WORD: u8 = 2; // word chars (Call-ID): token chars and ( ) < > : \ " / [ ] ? { }
const UNRESERVED: u8 = 4; // alphanum and mark: - _ . ! ~ * ' ( )
const USER: u8 = 8; // user-unreserved: & = + $ , ; ? /
const PARAM: u8 = 16; // param-unreserved: [ ] / : & + $
const HNV: u8 = 32; // hnv-unreserved: [ ] / ? : + $
const PASSWORD: u8 = 64; // & = + $ ,
const HOST: u8 = 128; // alphanum - . _ (hostname characters, leniently with '_')

static CLASS: [u8; 256] = build_classes();

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] |= TOKEN | WORD | UNRESERVED;
        }
        c += 1;
    }
    t = mark(t, b"-.!%*_+`'~", TOKEN | WORD);
    t = mark(t, b"()<>:\\\"/[]?{}", WORD);
    t = mark(t, b"-_.!~*'()", UNRESERVED);
    t = mark(t, b"&=+$,;?/", USER);
    t = mark(t, b"[]/:&+$", PARAM);
    t = mark(t, b"[]/?:+$", HNV);
    t = mark(t, b"&=+$,", PASSWORD);
    t = mark(t, b"-._", HOST);
    let mut c = 0;
    while c < 256 {
        if (c as u8).is_ascii_alphanumeric() {
            t[c] |= HOST;
        }
        c += 1;
    }
    t
}

const fn mark(mut t: [u8; 256], chars: &[u8], class: u8) -> [u8; 256] {
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] |= class;
        i += 1;
    }
    t
}

#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}

/// `gen-value` characters outside quotes: token characters, `:` and IPv6 brackets.
#[inline]
pub(crate) fn is_gen_value(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0 || matches!(b, b':' | b'[' | b']')
}

/// Host name characters: alphanumerics, `-`, `.` and (leniently) `_`.
#[inline]
pub(crate) fn is_host(b: u8) -> bool {
    CLASS[b as usize] & HOST != 0
}

#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    CLASS[b as usize] & WORD != 0
}

#[inline]
pub(crate) fn is_user(b: u8) -> bool {
    CLASS[b as usize] & (UNRESERVED | USER) != 0
}

#[inline]
pub(crate) fn is_password(b: u8) -> bool {
    CLASS[b as usize] & (UNRESERVED | PASSWORD) != 0
}

#[inline]
pub(crate) fn is_param_char(b: u8) -> bool {
    CLASS[b as usize] & (UNRESERVED | PARAM) != 0
}

#[inline]
pub(crate) fn is_header_char(b: u8) -> bool {
    CLASS[b as usize] & (UNRESERVED | HNV) != 0
}

/// White space inside a header value: SP, HT, and the CR LF of a folded line.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `true` if `s` is a non-empty RFC 3261 token.
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Cuts leading and trailing LWS.
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Checks a run of `%HH` escapes and allowed characters; `allowed` says which raw bytes may
/// stand unescaped.
pub(crate) fn is_escaped_run(s: &[u8], allowed: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() || !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Byte slice to `&str` for text the grammar already restricted to ASCII (or checked as
/// UTF-8); never fails on such input, and yields `""` rather than panic on anything else.
#[inline]
pub(crate) fn ascii(s: &[u8]) -> &str {
    std::str::from_utf8(s).unwrap_or_default()
}

/// Decodes `%HH` escapes into bytes (RFC 3261 §19.1.4: escaped and unescaped forms compare
/// equal). Input that is not well escaped is returned as it stands.
pub fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => std::borrow::Cow::Owned(s),
        Err(e) => std::borrow::Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Why a typed parser stopped: what it expected, and where in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) what: &'static str,
    pub(crate) at: usize,
}

pub(crate) type Lex<T> = Result<T, Expected>;

/// Checks once that a header value is UTF-8, so that the scanner can hand out `&str` slices
/// without checking each again. Header values are nearly always ASCII: that case skips
/// `from_utf8`, whose fixed cost is most of the price of reading a short value.
#[inline]
pub(crate) fn utf8(s: &[u8]) -> Lex<&str> {
    if s.is_ascii() {
        #[allow(unsafe_code)]
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(s) });
    }
    std::str::from_utf8(s).map_err(|e| Expected {
        what: "UTF-8 text",
        at: e.valid_up_to(),
    })
}

/// A cursor over one header value (or URI), with the RFC 3261 separators built in. Every
/// position it stops at is before an ASCII byte or at the end, so its slices are always on
/// character boundaries (and `slice` would return "" rather than panic if one were not).
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Scanner { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to `pos` (a position this scanner or a sub-parser of the same text reported).
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.s.len());
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.slice(self.pos, self.s.len())
    }

    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn fail<T>(&self, what: &'static str) -> Lex<T> {
        Err(Expected { what, at: self.pos })
    }

    /// Skips LWS; returns whether there was any.
    pub(crate) fn skip_lws(&mut self) -> bool {
        let n = self.count(is_lws);
        self.pos += n;
        n > 0
    }

    /// How many bytes from here satisfy `f`. Every predicate used here is false for bytes
    /// of 0x80 and above, so a run always ends on a character boundary.
    #[inline]
    fn count(&self, f: impl Fn(u8) -> bool) -> usize {
        self.s
            .as_bytes()
            .get(self.pos..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| f(b))
            .count()
    }

    /// Eats `c` with optional LWS on either side (the grammar's SEMI, EQUAL, COMMA, SLASH...).
    pub(crate) fn eat_sep(&mut self, c: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.peek() == Some(c) {
            self.pos += 1;
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect_sep(&mut self, c: u8, what: &'static str) -> Lex<()> {
        if self.eat_sep(c) {
            Ok(())
        } else {
            self.fail(what)
        }
    }

    /// Takes bytes while `f` holds (possibly none); `f` must be false for non-ASCII bytes.
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        self.pos += self.count(f);
        self.slice(start, self.pos)
    }

    pub(crate) fn token(&mut self, what: &'static str) -> Lex<&'a str> {
        let t = self.take_while(is_token);
        if t.is_empty() { self.fail(what) } else { Ok(t) }
    }

    pub(crate) fn digits(&mut self, what: &'static str) -> Lex<&'a str> {
        let t = self.take_while(|b| b.is_ascii_digit());
        if t.is_empty() { self.fail(what) } else { Ok(t) }
    }

    /// A quoted string, quotes included; checks the quoted-pairs.
    pub(crate) fn quoted(&mut self) -> Lex<&'a str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return self.fail("a quoted string");
        }
        let b = self.s.as_bytes();
        loop {
            match self.peek() {
                None => return self.fail("a closing quote"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    match b.get(self.pos + 1) {
                        Some(&c) if c <= 0x7f && c != b'\n' && c != b'\r' => self.pos += 2,
                        _ => return self.fail("a valid escape after '\\'"),
                    }
                }
                Some(c) if c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n' || c == 0x7f => {
                    return self.fail("a printable character in the quoted string");
                }
                Some(_) => self.pos += 1,
            }
        }
        Ok(self.slice(start, self.pos))
    }

    /// `gen-value = token / host / quoted-string` (a host here is token chars, `:` and the
    /// brackets of an IPv6 reference).
    pub(crate) fn gen_value(&mut self) -> Lex<&'a str> {
        if self.peek() == Some(b'"') {
            return self.quoted();
        }
        let t = self.take_while(is_gen_value);
        if t.is_empty() {
            self.fail("a parameter value")
        } else {
            Ok(t)
        }
    }

    /// `*( SEMI generic-param )` after the main part of a header value, up to the end or a
    /// byte that cannot continue it. Calls `each(name, value)` for every parameter, and
    /// returns the raw parameter text (from the first `;`).
    pub(crate) fn header_params(
        &mut self,
        mut each: impl FnMut(&'a str, Option<&'a str>) -> Lex<()>,
    ) -> Lex<&'a str> {
        let mut end = self.pos;
        let mut start = None;
        while self.eat_sep(b';') {
            start.get_or_insert(end);
            let at = self.pos;
            let name = self.token("a parameter name after ';'")?;
            let value = if self.eat_sep(b'=') {
                Some(self.gen_value()?)
            } else {
                None
            };
            each(name, value).map_err(|e| Expected { at, ..e })?;
            end = self.pos;
        }
        self.pos = end;
        Ok(start.map_or("", |start| {
            self.slice(start, end)
                .trim_start_matches([' ', '\t', '\r', '\n'])
        }))
    }

    /// After a value: only LWS may remain.
    pub(crate) fn finish(&mut self, what: &'static str) -> Lex<()> {
        self.skip_lws();
        if self.is_empty() {
            Ok(())
        } else {
            self.fail(what)
        }
    }
}

/// The first element of a list value (up to the first top-level comma), trimmed.
pub(crate) fn first_element(s: &[u8]) -> &[u8] {
    split_list(s).next().unwrap_or_default()
}

/// What follows the first element of a list value: the first top-level comma and the rest,
/// or nothing.
pub(crate) fn after_first_element(s: &[u8]) -> &[u8] {
    top_level_comma(s, 0).map_or(&[], |i| &s[i..])
}

/// The first comma at or after `from` outside quoted strings and `<...>`.
fn top_level_comma(s: &[u8], from: usize) -> Option<usize> {
    let mut in_quote = false;
    let mut in_angle = false;
    let mut i = from;
    while i < s.len() {
        match s[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'<' if !in_quote => in_angle = true,
            b'>' if !in_quote => in_angle = false,
            b',' if !in_quote && !in_angle => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits a comma-separated list value at the top-level commas (outside quoted strings and
/// `<...>`), trimming LWS from each element. Empty elements are kept so that the typed
/// parser can refuse them.
pub(crate) fn split_list(s: &[u8]) -> ListIter<'_> {
    // Most list values hold one element: no comma at all means no splitting to do.
    let single = memchr::memchr(b',', s).is_none();
    ListIter {
        s,
        pos: 0,
        done: false,
        single,
    }
}

/// Iterator behind [`split_list`].
#[derive(Debug, Clone)]
pub(crate) struct ListIter<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
    single: bool,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        if self.single {
            self.done = true;
            return Some(trim_lws(self.s));
        }
        let s = self.s;
        let start = self.pos;
        if let Some(comma) = top_level_comma(s, start) {
            self.pos = comma + 1;
            return Some(trim_lws(&s[start..comma]));
        }
        self.done = true;
        Some(trim_lws(&s[start..]))
    }
}

/// Iterates over `;name[=value]` parameters in text a parser has already checked, yielding
/// names and values with LWS removed (values keep their quotes).
#[derive(Debug, Clone)]
pub(crate) struct ParamIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> ParamIter<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        ParamIter { s, pos: 0 }
    }

    /// `s[from..to]` without LWS; every cut is at an ASCII byte, so on a char boundary.
    fn part(&self, from: usize, to: usize) -> &'a str {
        self.s
            .get(from..to)
            .unwrap_or_default()
            .trim_matches([' ', '\t', '\r', '\n'])
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.s.as_bytes();
        // Find the next ';' outside quotes.
        while self.pos < s.len() && s[self.pos] != b';' {
            self.pos += 1;
        }
        if self.pos >= s.len() {
            return None;
        }
        self.pos += 1;
        let start = self.pos;
        let mut in_quote = false;
        let mut eq = None;
        while self.pos < s.len() {
            match s[self.pos] {
                b'\\' if in_quote => self.pos += 1,
                b'"' => in_quote = !in_quote,
                b'=' if !in_quote && eq.is_none() => eq = Some(self.pos),
                b';' if !in_quote => break,
                _ => {}
            }
            self.pos += 1;
        }
        let end = self.pos.min(s.len());
        Some(match eq {
            Some(e) => (self.part(start, e), Some(self.part(e + 1, end))),
            None => (self.part(start, end), None),
        })
    }
}

/// Removes the quotes and quoted-pair backslashes of a quoted string; leaves other text alone.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return std::borrow::Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_token(b'a') && is_token(b'~') && !is_token(b'(') && !is_token(b' '));
        assert!(is_word(b'(') && is_word(b'"') && !is_word(b'@') && !is_word(b';'));
        assert!(is_user(b';') && is_user(b'?') && !is_user(b'@'));
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<_> = split_list(b"\"a, b\" <sip:x;a=1,2>, c ,").collect();
        assert_eq!(v, [&b"\"a, b\" <sip:x;a=1,2>"[..], b"c", b""]);
    }

    #[test]
    fn params_iterate_with_lws() {
        let v: Vec<_> = ParamIter::new(" ;   tag    = 19n ; lr;q=\"a;b\"").collect();
        assert_eq!(
            v,
            [("tag", Some("19n")), ("lr", None), ("q", Some("\"a;b\""))]
        );
    }

    #[test]
    fn escapes() {
        assert!(is_escaped_run(b"a%20b", is_user));
        assert!(!is_escaped_run(b"a%2", is_user));
        assert!(!is_escaped_run(b"a%zz", is_user));
        assert_eq!(unescape("%75se%72"), "user");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unquote(r#""J \"R\"""#), r#"J "R""#);
    }
}
