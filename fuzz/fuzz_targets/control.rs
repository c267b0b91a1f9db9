#![no_main]
//! See `lifeboat_fuzz::control`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::control(data);
});
