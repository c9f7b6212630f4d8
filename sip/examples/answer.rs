//! Prints what a p2psip node answers to a SIP message read from a file: the parsed message
//! and its verdict, or the response it sends back.
//!
//! `cargo run -p p2psip-sip --example answer -- FILE [uas|proxy]`

use p2psip_sip::{Message, Policy, Rejection, Role, check_request, check_response};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: answer FILE [uas|proxy]");
        std::process::exit(2);
    };
    let role = match args.next().as_deref() {
        Some("uas") => Role::Uas,
        _ => Role::Proxy,
    };
    let policy = Policy::with_role(role);
    let bytes = match std::fs::read(&path) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1);
        }
    };
    match Message::parse(bytes.clone()) {
        Err(e) => {
            println!("does not parse: {e}");
            match Rejection::from_error(&e).response_to_raw(&bytes, Some("x"), &policy) {
                Some(resp) => print!("answer:\n{resp}"),
                None => println!("dropped"),
            }
        }
        Ok(Message::Request(req)) => match check_request(&req, &policy) {
            Ok(()) => println!("accepted: {} {}", req.method(), req.uri_str()),
            Err(r) => print!("answer:\n{}", r.response(&req, Some("x"), &policy)),
        },
        Ok(Message::Response(resp)) => match check_response(&resp) {
            Ok(()) => println!("accepted: {} {}", resp.status(), resp.reason()),
            Err(e) => println!("dropped: {e}"),
        },
    }
}
