#![no_main]
//! See `lifeboat_fuzz::metadata`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::metadata(data);
});
