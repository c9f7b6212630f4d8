//! `Uri::parse` on the input as UTF-8; a URI that parses must make a request that prints and
//! parses back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2psip_sip::{Message, Method, Request, Uri};
use p2psip_sip_fuzz::{assert_round_trip, visit_uri};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Uri::parse(s) {
        Ok(u) => {
            assert_eq!(u.as_str(), s);
            visit_uri(&u);
            let req = Request::new(Method::Options, s).expect("a URI that parses is a Request-URI");
            assert_round_trip(&Message::Request(req));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
