//! The one place every stored byte goes through: `seal` before storage, `open` after.
//!
//! Format version 1 has no encryption yet: a sealed object is its one-byte [`ObjectType`] tag
//! followed by the plaintext. The tag is checked on `open`, so a directory listing can never be
//! read as file data, nor an index as a snapshot. Encryption (an AEAD with the type bound into
//! the associated data) replaces the body of these two functions and nothing else.

use crate::error::{Error, Result};

/// What a sealed object is. Bound into every sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectType {
    /// A chunk of file content, inside a pack.
    DataBlob = 1,
    /// A directory listing, inside a pack.
    TreeBlob = 2,
    /// The header at the end of a pack.
    PackHeader = 3,
    /// An index object.
    Index = 4,
    /// A snapshot object.
    Snapshot = 5,
}

impl ObjectType {
    fn name(self) -> &'static str {
        match self {
            ObjectType::DataBlob => "file data",
            ObjectType::TreeBlob => "directory listing",
            ObjectType::PackHeader => "pack header",
            ObjectType::Index => "index",
            ObjectType::Snapshot => "snapshot",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectType::DataBlob,
            2 => ObjectType::TreeBlob,
            3 => ObjectType::PackHeader,
            4 => ObjectType::Index,
            5 => ObjectType::Snapshot,
            _ => return None,
        })
    }
}

/// Seals and opens objects with the repository's protection (none in format version 1).
#[derive(Debug, Clone, Default)]
pub struct Sealer {}

impl Sealer {
    /// Bytes added by sealing.
    pub const OVERHEAD: usize = 1;

    /// Seals `plain` as an object of type `ty`.
    pub fn seal(&self, ty: ObjectType, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + Self::OVERHEAD);
        out.push(ty as u8);
        out.extend_from_slice(plain);
        out
    }

    /// Opens a sealed object that must be of type `ty`; `what` names it in errors.
    pub fn open<'a>(&self, ty: ObjectType, sealed: &'a [u8], what: &str) -> Result<&'a [u8]> {
        let (&tag, body) = sealed
            .split_first()
            .ok_or_else(|| Error::corrupt(what, "empty object"))?;
        if tag != ty as u8 {
            let found = ObjectType::from_u8(tag).map_or("unknown data", ObjectType::name);
            return Err(Error::corrupt(
                what,
                format!(
                    "expected {} but found {found} (corrupt or tampered)",
                    ty.name()
                ),
            ));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_confusion_is_rejected() {
        let s = Sealer::default();
        let sealed = s.seal(ObjectType::TreeBlob, b"listing");
        assert_eq!(
            s.open(ObjectType::TreeBlob, &sealed, "x").expect("open"),
            b"listing"
        );
        let err = s
            .open(ObjectType::DataBlob, &sealed, "x")
            .expect_err("must refuse");
        assert!(err.to_string().contains("directory listing"), "{err}");
        assert!(s.open(ObjectType::DataBlob, &[], "x").is_err());
    }
}
