#![no_main]
//! See `lifeboat_fuzz::schedule`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::schedule(data);
});
