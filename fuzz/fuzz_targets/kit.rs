#![no_main]
//! See `lifeboat_fuzz::kit`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::kit(data);
});
