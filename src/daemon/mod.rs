//! The daemon: runs scheduled backups from the config, keeps their state, answers on a control
//! socket, and tells people what they must know.

pub mod schedule;
