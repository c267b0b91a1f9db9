#![no_main]
//! See `lifeboat_fuzz::sealed`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::sealed(data);
});
