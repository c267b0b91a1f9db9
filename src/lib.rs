//! Lifeboat: a verified, deduplicating backup engine and daemon for Linux servers.
//!
//! The library holds everything; `src/main.rs` is a thin command-line front end. The modules
//! follow the layers of the system (see docs/DESIGN.md): [`storage`] below [`repo`], the
//! operations ([`ops`]: backup, restore, check, prune, repair, drill, ...) above them, and the
//! [`daemon`] above those; the command line (`src/cli/`) is the edge that reads the
//! environment and prints.

pub mod daemon;
pub mod display;
pub mod error;
pub mod id;
pub mod interrupt;
pub mod memory;
pub mod ops;
pub mod pool;
pub mod progress;
pub mod repo;
pub mod storage;
pub mod units;

pub use error::{Error, Result};
pub use repo::Repository;
