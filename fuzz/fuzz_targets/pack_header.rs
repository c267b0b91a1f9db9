#![no_main]
//! See `lifeboat_fuzz::pack_header`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::pack_header(data);
});
