//! The end-to-end suite: every command of the `lifeboat` binary and the library's public API,
//! against local directories and the S3 and Azure test servers (`bash tests/run.sh` starts
//! them). One test binary with a module per area, so the crate is linked once; `cargo test
//! --test suite restore::` runs one area. Two areas that change state of the whole test
//! process (the interrupt flag, `DBUS_SYSTEM_BUS_ADDRESS`) stay binaries of their own:
//! `tests/interrupt.rs`, `tests/inhibit.rs`.

#[macro_use]
mod common;

mod backup;
mod backup_hostile;
mod check;
mod clock;
mod cloud;
mod crash;
mod daemon;
mod diff;
mod disk_full;
mod drill;
mod dump;
mod encryption;
mod find;
mod fixtures;
mod fuzz_corpus;
mod hosts;
mod init;
mod key;
mod ls;
mod mount;
mod names_escaped;
mod progress;
mod prune;
mod recover;
mod repair;
mod restore;
mod restore_hostile;
mod snapshots;
mod special_files;
mod storage_contract;
mod storage_faults;
mod trees_hostile;
mod wire_faults;
