#![no_main]
//! See `lifeboat_fuzz::blob`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::blob(data);
});
