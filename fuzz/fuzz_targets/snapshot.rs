#![no_main]
//! See `lifeboat_fuzz::snapshot`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::snapshot(data);
});
