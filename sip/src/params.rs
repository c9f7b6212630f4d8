//! Parameter lists: `;name=value;flag` after a URI or a header value.

use std::borrow::Cow;
use std::fmt;

use crate::text::{ParamIter, unquote};

/// The parameters of a URI or a header value, as written (already checked against the
/// grammar when their owner was parsed). Names compare without case; values keep their
/// quotes and escapes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    pub(crate) fn new(raw: &'a str) -> Params<'a> {
        Params(raw)
    }

    /// The parameters as written, from the first `;`.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// `true` if there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Iterates over (name, value) pairs; a flag parameter has no value.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        ParamIter::new(self.0)
    }

    /// The first parameter called `name`: `Some(None)` for a flag, `Some(Some(value))` for a
    /// parameter with a value, `None` if it is absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of `name` with quotes removed, if it has one.
    pub fn value(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).flatten().map(unquote)
    }

    /// Whether a parameter called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
