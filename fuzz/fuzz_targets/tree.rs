#![no_main]
//! See `lifeboat_fuzz::tree`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::tree(data);
});
