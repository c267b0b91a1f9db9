#![no_main]
//! See `lifeboat_fuzz::maintenance_time`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::maintenance_time(data);
});
