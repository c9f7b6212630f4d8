//! # p2psip: the command line
//!
//! The `p2psip` command will run a node (`p2psip node`), start a local testnet
//! (`p2psip testnet`), and drive the built-in user agent (`p2psip call`, `p2psip message`).
//! It arrives with step 6 of milestone 1; until then it says so and exits.

fn main() {
    eprintln!(
        "p2psip: no commands yet. Today the SIP message layer works; see README.md \
         (try: cargo run -p p2psip-sip --example answer -- sip/tests/data/rfc4475/wsinv.dat)"
    );
    std::process::exit(2);
}
