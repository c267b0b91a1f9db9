#![no_main]
//! See `lifeboat_fuzz::key`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::key(data);
});
