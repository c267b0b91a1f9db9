#![no_main]
//! See `lifeboat_fuzz::daemon_state`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::daemon_state(data);
});
