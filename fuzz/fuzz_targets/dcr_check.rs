//! `cargo fuzz run dcr_check`: `check` must never panic, and whatever it accepts must
//! normalize to a fixed point (checking the forwarded body again yields the same body).
#![no_main]

use dcr_gateway::dcr::{check, Policy, SecurityMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = Policy::default();
    let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
    for policy in [&strict, &permissive] {
        if let Ok(n) = check(data, policy) {
            match check(&n.body, policy) {
                Ok(again) => assert_eq!(again.body, n.body, "normalization is not idempotent"),
                Err(e) => panic!("normalized output rejected: {e}"),
            }
        }
    }
});
