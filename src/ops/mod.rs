//! The operations on a repository, one module each, side by side as the commands in `src/cli/`
//! are: what `lifeboat backup`, `restore`, `check`, ... do, as library functions that take an
//! opened [`Repository`](crate::repo::Repository) and an `*Options` struct and return a report.
//! They share the mechanisms below them (the tree walk [`crate::repo::walk`], the verified
//! reader [`crate::repo::read`], the worker pool [`crate::pool`], the damage classification
//! [`crate::error`]); none of them reads the environment or prints.

pub mod backup;
pub mod check;
pub mod diff;
pub mod drill;
pub mod dump;
pub mod find;
pub mod forget;
pub mod hosts;
pub mod mount;
pub mod prune;
pub mod recover;
pub mod repair;
pub mod restore;
pub mod retention;
