//! Typed 256-bit identifiers.
//!
//! Every object in a repository is named by a BLAKE3 hash: a chunk (blob) by the hash of its
//! plaintext content, a pack/index/snapshot object by the hash of its stored bytes. The newtypes
//! below keep them apart so that a pack id can never be passed where a blob id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// An id could not be parsed from text.
#[derive(Debug, thiserror::Error)]
#[error("invalid id {text:?}: expected {expected} hexadecimal characters")]
pub struct ParseIdError {
    text: String,
    expected: usize,
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The hash of `data`, as this kind of id.
            pub fn hash(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            /// Full lowercase hex form (64 characters).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Builds an id from a byte slice of exactly [`ID_LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; ID_LEN]>::try_from(bytes).ok().map(Self)
            }

            /// Parses a full 64-character hex id.
            pub fn from_hex(text: &str) -> Result<Self, ParseIdError> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(text, &mut out).map_err(|_| ParseIdError {
                    text: text.to_string(),
                    expected: ID_LEN * 2,
                })?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    // a fixed-size tuple: 32 bytes in postcard, no length prefix
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(D::Error::custom)
                } else {
                    let b: [u8; ID_LEN] = Deserialize::deserialize(d)?;
                    Ok(Self(b))
                }
            }
        }
    };
}

typed_id!(
    /// A chunk of file content or a directory listing: BLAKE3 of its plaintext.
    BlobId
);
typed_id!(
    /// A pack object: BLAKE3 of its stored bytes.
    PackId
);
typed_id!(
    /// An index object: BLAKE3 of its stored bytes.
    IndexId
);
typed_id!(
    /// A snapshot object: BLAKE3 of its stored bytes.
    SnapshotId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId::hash(b"hello");
        let parsed: BlobId = id.to_hex().parse().expect("valid hex");
        assert_eq!(id, parsed);
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(BlobId::from_hex("abc").is_err());
        assert!(BlobId::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn json_is_hex_and_postcard_is_bytes() {
        let id = PackId::hash(b"x");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        let bin = postcard::to_stdvec(&id).expect("serialize");
        assert_eq!(bin.len(), 32);
        let back: PackId = postcard::from_bytes(&bin).expect("deserialize");
        assert_eq!(back, id);
    }
}
