//! The repository's `config` object: format version and the parameters every writer must use.

use serde::{Deserialize, Serialize};

use super::seal::Cipher;
use crate::error::{Error, Result};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Magic first line of the config object, so a stray file is never mistaken for a repository.
const MAGIC: &str = "lifeboat-repository";

/// Parameters of a repository, fixed at `init`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Always "lifeboat-repository".
    pub magic: String,
    /// Format version (see docs/FORMAT.md).
    pub version: u32,
    /// Random id of this repository (64 hex).
    pub id: String,
    /// Content-defined chunking parameters.
    pub chunker: ChunkerParams,
    /// zstd level for chunks and metadata.
    pub compression_level: i32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// Encryption scheme: [`ENCRYPTION_NONE`] or a [`Cipher`]'s name.
    pub encryption: String,
    /// Whether the storage refused a second create-only write of one name when the repository
    /// was made (probed at `init`); locking relies only on guarantees the store gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_create_only: Option<bool>,
    /// Encrypted repositories: keyed BLAKE3 of this object without this field (hex), so a
    /// changed parameter or a downgrade is detected once the master key is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// No encryption (`init --insecure-no-encryption`).
pub const ENCRYPTION_NONE: &str = "none";

/// FastCDC parameters in bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

/// Largest pack target accepted (packs are addressed with 32-bit offsets).
pub const MAX_PACK_SIZE: u32 = 1 << 30;

impl RepoConfig {
    /// A new configuration with a random id; `cipher` `None` is an unencrypted repository.
    pub fn new(compression_level: i32, pack_size: u32, cipher: Option<Cipher>) -> Result<Self> {
        let cfg = RepoConfig {
            magic: MAGIC.into(),
            version: FORMAT_VERSION,
            id: hex::encode(rand::random::<[u8; 32]>()),
            chunker: ChunkerParams::default(),
            compression_level,
            pack_size,
            encryption: cipher.map_or(ENCRYPTION_NONE, Cipher::name).into(),
            storage_create_only: None,
            mac: None,
        };
        cfg.validate("config")?;
        Ok(cfg)
    }

    /// Checks that every parameter is in range.
    pub fn validate(&self, location: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::corrupt(format!("{location}/config"), reason));
        if self.magic != MAGIC {
            return bad(format!("not a Lifeboat config (magic {:?})", self.magic));
        }
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                location: location.into(),
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let c = self.chunker;
        let ok = (64..=1 << 20).contains(&c.min_size)
            && (256..=4 << 20).contains(&c.avg_size)
            && (1024..=16 << 20).contains(&c.max_size)
            && c.min_size <= c.avg_size
            && c.avg_size <= c.max_size;
        if !ok {
            return bad(format!("chunker parameters out of range: {c:?}"));
        }
        if !(1..=22).contains(&self.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} is out of range: use 1 to 22",
                self.compression_level
            )));
        }
        if self.pack_size < 1 << 20 || self.pack_size > MAX_PACK_SIZE {
            return Err(Error::Invalid(format!(
                "pack size {} is out of range: use 1 MiB to 1 GiB",
                self.pack_size
            )));
        }
        if self.encryption != ENCRYPTION_NONE && Cipher::from_name(&self.encryption).is_none() {
            return bad(format!(
                "unknown encryption scheme {:?} (this version reads {ENCRYPTION_NONE} or {}; a newer Lifeboat may have written it)",
                self.encryption,
                Cipher::names()
            ));
        }
        Ok(())
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption != ENCRYPTION_NONE
    }

    /// The cipher of an encrypted repository (validated: a config that names none it knows
    /// is refused when read).
    pub fn cipher(&self) -> Option<Cipher> {
        Cipher::from_name(&self.encryption)
    }

    /// The bytes the MAC covers: the serialized config without its `mac` field.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.mac = None;
        c.to_bytes()
    }

    /// Serialized form (pretty JSON, readable by an operator).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of plain fields to JSON cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and validates a config object.
    pub fn from_bytes(bytes: &[u8], location: &str) -> Result<Self> {
        let cfg: RepoConfig = serde_json::from_slice(bytes).map_err(|e| {
            Error::corrupt(format!("{location}/config"), format!("unreadable: {e}"))
        })?;
        cfg.validate(location)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let c = RepoConfig::new(3, 16 << 20, Some(Cipher::Xaes256Gcm)).expect("valid");
        let back = RepoConfig::from_bytes(&c.to_bytes(), "r").expect("parse");
        assert_eq!(c, back);
        assert!(RepoConfig::new(0, 16 << 20, None).is_err());
        assert!(RepoConfig::new(3, 10, None).is_err());
        assert!(RepoConfig::from_bytes(b"{", "r").is_err());
        for cipher in Cipher::ALL {
            let c = RepoConfig::new(3, 16 << 20, Some(cipher)).expect("valid");
            let back = RepoConfig::from_bytes(&c.to_bytes(), "r").expect("parse");
            assert_eq!(back.cipher(), Some(cipher));
            assert!(back.is_encrypted());
        }
        let plain = RepoConfig::new(3, 16 << 20, None).expect("valid");
        assert!(!plain.is_encrypted() && plain.cipher().is_none());
        let mut unknown = c.clone();
        unknown.encryption = "rot13".into();
        let err = RepoConfig::from_bytes(&unknown.to_bytes(), "r").expect_err("unknown cipher");
        assert!(
            err.to_string().contains("unknown encryption scheme"),
            "{err}"
        );
        let mut newer = c.clone();
        newer.version = 99;
        assert!(matches!(
            RepoConfig::from_bytes(&newer.to_bytes(), "r"),
            Err(Error::UnsupportedVersion { .. })
        ));
    }
}
