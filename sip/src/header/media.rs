//! Media types: Content-Type and Accept (RFC 3261 §20.1, §20.15).

use super::typed_header;
use crate::Params;
use crate::text::{Lex, Scanner};

/// `type/subtype;param=value`. Types and subtypes compare without case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    ty: &'a str,
    subtype: &'a str,
    params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// The type (`application`), or `*` in an Accept range.
    pub fn ty(&self) -> &'a str {
        self.ty
    }

    /// The subtype (`sdp`), or `*` in an Accept range.
    pub fn subtype(&self) -> &'a str {
        self.subtype
    }

    /// The parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// Whether this is `ty/subtype`, ignoring case and parameters.
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this (as an Accept range, with `*` wildcards) covers `ty/subtype`.
    pub fn covers(&self, ty: &str, subtype: &str) -> bool {
        (self.ty == "*" || self.ty.eq_ignore_ascii_case(ty))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

/// `Content-Type`: the media type of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType<'a>(pub MediaType<'a>);

/// `Accept`: one media range the sender accepts in a response body (the field may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept<'a>(pub MediaType<'a>);

pub(crate) fn media_type(s: &str) -> Lex<MediaType<'_>> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let ty = sc.token("a media type")?;
    sc.expect_sep(b'/', "'/' between media type and subtype")?;
    let subtype = sc.token("a media subtype")?;
    let params = Params::new(sc.header_params(|_, _| Ok(()))?);
    sc.finish("';' and a parameter, or the end of the media type")?;
    Ok(MediaType {
        ty,
        subtype,
        params,
    })
}

typed_header!(ContentType, ContentType, |s| media_type(s).map(ContentType));
typed_header!(
    Accept,
    Accept,
    |s| media_type(s).map(Accept),
    may_be_empty = true
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn media_types() {
        let c = ContentType::parse(b"multipart/mixed;boundary=unique-boundary-1").unwrap();
        assert!(c.0.is("Multipart", "MIXED"));
        assert_eq!(
            c.0.params().get("boundary"),
            Some(Some("unique-boundary-1"))
        );
        assert!(
            Accept::parse(b"*/*")
                .unwrap()
                .0
                .covers("application", "sdp")
        );
        assert!(
            Accept::parse(b"application/*")
                .unwrap()
                .0
                .covers("application", "sdp")
        );
        assert!(
            !Accept::parse(b"text/nobodyKnowsThis")
                .unwrap()
                .0
                .covers("application", "sdp")
        );
        assert!(ContentType::parse(b"application").is_err());
        assert!(ContentType::parse(b"application/sdp;").is_err());
    }
}
