#![no_main]
//! See `lifeboat_fuzz::repo_config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lifeboat_fuzz::repo_config(data);
});
