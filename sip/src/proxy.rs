//! The proxy core (RFC 3261 §16): stateful forwarding with forking.
