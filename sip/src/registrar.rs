//! The registrar (RFC 3261 §10): bindings of an address-of-record to contacts.
