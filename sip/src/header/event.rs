//! Event and Subscription-State (RFC 6665 §8.2).

use super::typed_header;
use crate::Params;
use crate::text::{Lex, Scanner};

/// `Event`: the event package (with templates, `presence.winfo`) and its parameters (`id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    package: &'a str,
    params: Params<'a>,
}

impl<'a> Event<'a> {
    /// The event type, package and templates (`dialog`, `presence.winfo`).
    pub fn package(&self) -> &'a str {
        self.package
    }

    /// The `id` parameter.
    pub fn id(&self) -> Option<&'a str> {
        self.params.get("id").flatten()
    }

    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
}

/// `Subscription-State`: `active`, `pending`, `terminated` or an extension, with `expires`,
/// `reason` and `retry-after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    state: &'a str,
    params: Params<'a>,
}

impl<'a> SubscriptionState<'a> {
    /// The state as written.
    pub fn state(&self) -> &'a str {
        self.state
    }

    /// The `expires` parameter, in seconds.
    pub fn expires(&self) -> Option<u32> {
        self.params.get("expires").flatten()?.parse().ok()
    }

    /// The `reason` parameter.
    pub fn reason(&self) -> Option<&'a str> {
        self.params.get("reason").flatten()
    }

    /// The `retry-after` parameter, in seconds.
    pub fn retry_after(&self) -> Option<u32> {
        self.params.get("retry-after").flatten()?.parse().ok()
    }

    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
}

fn token_with_params<'a>(s: &'a str, what: &'static str) -> Lex<(&'a str, Params<'a>)> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let t = sc.token(what)?;
    let params = Params::new(sc.header_params(|_, _| Ok(()))?);
    sc.finish("';' and a parameter, or the end of the value")?;
    Ok((t, params))
}

typed_header!(Event, Event, |s| token_with_params(s, "an event package")
    .map(|(package, params)| Event { package, params }));
typed_header!(SubscriptionState, SubscriptionState, |s| token_with_params(
    s,
    "a subscription state"
)
.map(|(state, params)| SubscriptionState { state, params }));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn events() {
        let e = Event::parse(b"presence.winfo;id=42").unwrap();
        assert_eq!((e.package(), e.id()), ("presence.winfo", Some("42")));
        let s = SubscriptionState::parse(b"terminated;reason=timeout;retry-after=30").unwrap();
        assert_eq!(
            (s.state(), s.reason(), s.retry_after()),
            ("terminated", Some("timeout"), Some(30))
        );
        assert!(Event::parse(b"").is_err());
    }
}
