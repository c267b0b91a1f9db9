#![no_main]
//! See `lifeboat_fuzz::index`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::index(data);
});
