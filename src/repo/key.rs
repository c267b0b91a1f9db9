//! Key objects: the master key sealed by a key derived from a password.
//!
//! A key object (`keys/<id>`, JSON, named by the hash of its bytes like every object) holds
//! the Argon2id parameters and salt, and the 64-byte master key sealed with
//! XChaCha20-Poly1305 under the derived key. The associated data binds the repository id, so a
//! key object copied from another repository does not open this one. A repository can have
//! several key objects (several passwords) for the same master key.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::seal::{MasterKey, MASTER_KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};

/// Reads a password from a file: its first line, without the line ending. An empty password
/// is an error naming the file.
pub fn read_password_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| Error::io("read password file", path, e))?);
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::Invalid(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

/// Argon2id parameters, stored in the key object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Always "argon2id".
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Random salt, hex.
    pub salt: String,
}

/// Bounds accepted when reading a key object, so a hostile one cannot make `open` allocate
/// without limit or spin for hours.
const MAX_MEMORY_KIB: u32 = 4 << 20;
const MAX_ITERATIONS: u32 = 1000;
const MAX_PARALLELISM: u32 = 64;
/// Lanes of a calibrated key at most (one per core).
pub const CALIBRATED_MAX_LANES: u32 = 4;
/// Memory used by default: 64 MiB.
pub const DEFAULT_MEMORY_KIB: u32 = 64 * 1024;

impl KdfParams {
    /// Parameters with a fresh salt.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let p = KdfParams {
            algorithm: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism,
            salt: hex::encode(salt),
        };
        p.argon2("new key")?;
        Ok(p)
    }

    /// Parameters whose work takes about `target` of one core on this machine, at
    /// [`DEFAULT_MEMORY_KIB`], in one lane per core (up to [`CALIBRATED_MAX_LANES`]).
    ///
    /// Argon2id fills the same memory the same number of times whatever the lanes, so an
    /// attacker pays the same per guess as with one lane; lanes are computed in parallel, so
    /// opening takes `target / lanes` on a machine with that many cores (and `target` on one
    /// core: a key made on a big server still opens on a small recovery machine).
    pub fn calibrate(target: Duration) -> Result<Self> {
        let probe = KdfParams::new(DEFAULT_MEMORY_KIB, 1, 1)?;
        let started = Instant::now();
        probe.derive(b"calibration")?;
        let one = started.elapsed().as_secs_f64().max(1e-3);
        let iterations = ((target.as_secs_f64() / one).round() as u32).clamp(2, 50);
        let lanes = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, CALIBRATED_MAX_LANES as usize) as u32;
        KdfParams::new(DEFAULT_MEMORY_KIB, iterations, lanes)
    }

    fn argon2(&self, what: &str) -> Result<Argon2<'static>> {
        let bad =
            |reason: String| Error::corrupt(what, format!("key derivation parameters: {reason}"));
        if self.algorithm != "argon2id" {
            return Err(bad(format!("unknown algorithm {:?}", self.algorithm)));
        }
        if self.memory_kib > MAX_MEMORY_KIB
            || self.iterations > MAX_ITERATIONS
            || self.parallelism > MAX_PARALLELISM
        {
            return Err(bad("out of range".into()));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Invalid(format!("invalid key derivation parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Derives a 32-byte key from `password`.
    pub fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt("key", "salt is not hex"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        self.argon2("key")?
            .hash_password_into(password, &salt, out.as_mut())
            .map_err(|e| Error::Invalid(format!("key derivation failed: {e}")))?;
        Ok(out)
    }
}

/// A key object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub host: String,
    pub username: String,
    pub kdf: KdfParams,
    /// nonce | sealed master key | tag, hex.
    pub master_key: String,
}

fn ad(repo_id: &str) -> Vec<u8> {
    format!("lifeboat key v1 repository {repo_id}").into_bytes()
}

impl KeyFile {
    /// Seals `master` under `password` for the repository `repo_id`.
    pub fn seal(
        master: &MasterKey,
        password: &[u8],
        kdf: KdfParams,
        repo_id: &str,
        host: &str,
        username: &str,
    ) -> Result<Self> {
        let wrapping = kdf.derive(password)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(wrapping.as_ref()));
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = Zeroizing::new(master.to_bytes().to_vec());
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &ad(repo_id), &mut buf)
            .map_err(|_| Error::Invalid("encryption of the master key failed".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buf);
        sealed.extend_from_slice(&tag);
        Ok(KeyFile {
            version: 1,
            created: Utc::now(),
            host: host.into(),
            username: username.into(),
            kdf,
            master_key: hex::encode(sealed),
        })
    }

    /// Opens the master key with `password`: `Ok(None)` when the password does not fit.
    pub fn open(&self, password: &[u8], repo_id: &str, what: &str) -> Result<Option<MasterKey>> {
        if self.version != 1 {
            return Err(Error::corrupt(
                what,
                format!("unknown key version {}", self.version),
            ));
        }
        let sealed = hex::decode(&self.master_key)
            .map_err(|_| Error::corrupt(what, "master key is not hex"))?;
        if sealed.len() != NONCE_LEN + MASTER_KEY_LEN + TAG_LEN {
            return Err(Error::corrupt(
                what,
                "sealed master key has the wrong length",
            ));
        }
        let wrapping = self.kdf.derive(password)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(wrapping.as_ref()));
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(MASTER_KEY_LEN);
        let mut buf = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        buf.copy_from_slice(body);
        match cipher.decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &ad(repo_id),
            buf.as_mut(),
            Tag::from_slice(tag),
        ) {
            Ok(()) => Ok(Some(MasterKey::from_bytes(&buf))),
            Err(_) => Ok(None),
        }
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data: serializing to JSON cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a key object.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(what, format!("unreadable key object: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams::new(64, 1, 1).expect("params")
    }

    /// Keys written by any earlier version must open: the derivation is the reference
    /// Argon2id's, one lane or several (lanes computed in parallel). Expected values from the
    /// reference implementation's command line tool:
    /// `echo -n "correct horse" | argon2 lifeboat-salt-16 -id -t 3 -k 256 -p P -l 32 -r`.
    #[test]
    fn derivation_matches_the_reference_argon2id_for_one_and_several_lanes() {
        for (lanes, expected) in [
            (
                1,
                "bad16f634a0cbc293db5561896799d6a60af9a4058d9fe07645ebff04a080243",
            ),
            (
                2,
                "bd9b569ce93f07373a6f268b10dff7990977ec9facb71a972e26bbab27077ec5",
            ),
            (
                4,
                "2df111b56f538e3cc1cb5d6e765d6d515229439a5fef7b71569d7684f82a840a",
            ),
        ] {
            let mut p = KdfParams::new(256, 3, lanes).expect("params");
            p.salt = hex::encode(b"lifeboat-salt-16");
            let key = p.derive(b"correct horse").expect("derive");
            assert_eq!(hex::encode(key.as_ref()), expected, "{lanes} lanes");
        }
    }

    #[test]
    fn a_calibrated_key_has_a_lane_per_core_up_to_the_bound() {
        let p = KdfParams::calibrate(Duration::from_millis(1)).expect("calibrate");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert_eq!(p.parallelism, cores.clamp(1, CALIBRATED_MAX_LANES));
        assert_eq!(p.memory_kib, DEFAULT_MEMORY_KIB);
        assert!(p.iterations >= 2);
    }

    #[test]
    fn right_password_opens_wrong_one_does_not() {
        let master = MasterKey::random();
        let key = KeyFile::seal(&master, b"secret", fast(), "repo1", "h", "u").expect("seal");
        let back = KeyFile::from_bytes(&key.to_bytes(), "k").expect("parse");
        let opened = back
            .open(b"secret", "repo1", "k")
            .expect("open")
            .expect("right password");
        assert_eq!(opened.to_bytes(), master.to_bytes());
        assert!(back.open(b"Secret", "repo1", "k").expect("open").is_none());
        // Bound to its repository.
        assert!(back.open(b"secret", "repo2", "k").expect("open").is_none());
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let mut k = fast();
        k.memory_kib = u32::MAX;
        assert!(k.derive(b"x").is_err());
        let mut k = fast();
        k.algorithm = "md5".into();
        assert!(k.derive(b"x").is_err());
        assert!(KeyFile::from_bytes(b"{}", "k").is_err());
    }
}
