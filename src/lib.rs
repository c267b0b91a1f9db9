//! Lifeboat: a verified, deduplicating backup engine and daemon for Linux servers.
//!
//! The library holds everything; `src/main.rs` is a thin command-line front end. The modules
//! follow the layers of the system (see docs/DESIGN.md): [`storage`] below [`repo`], and the
//! commands ([`backup`], [`restore`], [`check`], [`drill`], [`repair`]) above.

pub mod backup;
pub mod check;
pub mod daemon;
pub mod display;
pub mod drill;
pub mod error;
pub mod forget;
pub mod id;
pub mod interrupt;
pub mod memory;
pub mod pool;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod storage;
pub mod units;

pub use error::{Error, Result};
pub use repo::Repository;
