//! `access::check_store` on an entry whose value is the input after its first byte, signed
//! with fixed keys so that the value gets past the signature to the kind's rules; the first
//! byte chooses the kind, the enrollment CA, what the peer holds, the signer, and whether the
//! value's delegation or certificate is re-signed. An accepted entry must satisfy the rules
//! (its value decodes, the signer and the delegation match, the AOR's owner delegated it).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2psip_overlay_fuzz::exercise_store(data);
});
