//! The one place every stored byte goes through: `seal` before storage, `open` after; and the
//! one place chunk ids are computed.
//!
//! Unencrypted repositories: a sealed object is its one-byte [`ObjectType`] tag followed by the
//! plaintext; the tag is checked on `open`, so a directory listing can never be read as file
//! data, nor an index as a snapshot. Chunk ids are plain BLAKE3.
//!
//! Encrypted repositories: XChaCha20-Poly1305 with the repository's master key and a random
//! 192-bit nonce per object (random nonces of this size never collide in practice, so no nonce
//! state is kept anywhere): `nonce (24) | ciphertext | tag (16)`. The associated data binds the
//! format and the object type, so an object of one type fails authentication when opened as
//! another. Chunk ids are BLAKE3 keyed with a separate 256-bit key, so ids reveal nothing
//! about content to someone without the key.

use std::borrow::Cow;
use std::sync::Arc;

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::BlobId;

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
    /// A lock object.
    Lock = 6,
}

impl ObjectType {
    /// What the object is, for messages ("snapshot", "pack header", ...).
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::DataBlob => "file data",
            ObjectType::TreeBlob => "directory listing",
            ObjectType::PackHeader => "pack header",
            ObjectType::Index => "index",
            ObjectType::Snapshot => "snapshot",
            ObjectType::Lock => "lock",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectType::DataBlob,
            2 => ObjectType::TreeBlob,
            3 => ObjectType::PackHeader,
            4 => ObjectType::Index,
            5 => ObjectType::Snapshot,
            6 => ObjectType::Lock,
            _ => return None,
        })
    }
}

/// Bytes of an XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the master key material.
pub const MASTER_KEY_LEN: usize = 64;
const AD_PREFIX: &[u8] = b"lifeboat object v1 type ";

/// The repository's secret: an encryption key and a chunk-id key. Wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    enc: [u8; 32],
    id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn random() -> Self {
        let mut k = MasterKey {
            enc: [0; 32],
            id: [0; 32],
        };
        rand::rngs::OsRng.fill_bytes(&mut k.enc);
        rand::rngs::OsRng.fill_bytes(&mut k.id);
        k
    }

    /// The key material (encryption key, then chunk-id key).
    pub fn to_bytes(&self) -> [u8; MASTER_KEY_LEN] {
        let mut out = [0u8; MASTER_KEY_LEN];
        out[..32].copy_from_slice(&self.enc);
        out[32..].copy_from_slice(&self.id);
        out
    }

    /// From key material.
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> Self {
        let mut k = MasterKey {
            enc: [0; 32],
            id: [0; 32],
        };
        k.enc.copy_from_slice(&bytes[..32]);
        k.id.copy_from_slice(&bytes[32..]);
        k
    }

    /// A subkey for authenticating the config object.
    pub fn config_mac_key(&self) -> [u8; 32] {
        blake3::derive_key("lifeboat 2026-11 config authentication", &self.enc)
    }
}

struct Encryption {
    enc_key: [u8; 32],
    id_key: [u8; 32],
    mac_key: [u8; 32],
}

impl Drop for Encryption {
    fn drop(&mut self) {
        self.enc_key.zeroize();
        self.id_key.zeroize();
        self.mac_key.zeroize();
    }
}

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) for one object: the first 16 bytes of the
/// 24-byte nonce and the key give a subkey (HChaCha20); ChaCha20-Poly1305 (RFC 8439) with
/// that subkey and the nonce `0000 || nonce[16..24]` does the rest. The bytes are those of
/// the `chacha20poly1305` crate's `XChaCha20Poly1305` (a test below holds both to that).
fn object_cipher(enc_key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let mut subkey =
        chacha20::hchacha::<chacha20::cipher::consts::U10>(enc_key.into(), (&nonce[..16]).into());
    // A 32-byte key is the one length CHACHA20_POLY1305 takes, and `subkey` is 32 bytes
    // (HChaCha20's output), so this cannot fail.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
    subkey.as_mut_slice().zeroize();
    let key = LessSafeKey::new(unbound.expect("32-byte ChaCha20-Poly1305 key"));
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(&nonce[16..]);
    (key, Nonce::assume_unique_for_key(short))
}

/// Seals and opens objects with the repository's protection.
#[derive(Clone, Default)]
pub struct Sealer {
    encryption: Option<Arc<Encryption>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.encryption.is_some() {
            "encrypted"
        } else {
            "plain"
        };
        write!(f, "Sealer({kind})")
    }
}

fn ad(ty: ObjectType) -> [u8; AD_PREFIX.len() + 1] {
    let mut a = [0u8; AD_PREFIX.len() + 1];
    a[..AD_PREFIX.len()].copy_from_slice(AD_PREFIX);
    a[AD_PREFIX.len()] = ty as u8;
    a
}

impl Sealer {
    /// Unencrypted: type tag only.
    pub fn plain() -> Self {
        Sealer { encryption: None }
    }

    /// Encrypted with `key`.
    pub fn encrypted(key: &MasterKey) -> Self {
        Sealer {
            encryption: Some(Arc::new(Encryption {
                enc_key: key.enc,
                id_key: key.id,
                mac_key: key.config_mac_key(),
            })),
        }
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Bytes added by sealing.
    pub fn overhead(&self) -> usize {
        if self.encryption.is_some() {
            NONCE_LEN + TAG_LEN
        } else {
            1
        }
    }

    /// The id of a chunk or listing with this content.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        match &self.encryption {
            Some(e) => BlobId(*blake3::keyed_hash(&e.id_key, data).as_bytes()),
            None => BlobId::hash(data),
        }
    }

    /// A MAC of the config object's bytes (encrypted repositories only).
    pub fn config_mac(&self, bytes: &[u8]) -> Option<String> {
        self.encryption
            .as_ref()
            .map(|e| blake3::keyed_hash(&e.mac_key, bytes).to_hex().to_string())
    }

    /// Seals `plain` as an object of type `ty`.
    pub fn seal(&self, ty: ObjectType, plain: &[u8]) -> Vec<u8> {
        match &self.encryption {
            None => {
                let mut out = Vec::with_capacity(plain.len() + 1);
                out.push(ty as u8);
                out.extend_from_slice(plain);
                out
            }
            Some(e) => {
                let mut out = Vec::with_capacity(plain.len() + NONCE_LEN + TAG_LEN);
                let mut nonce = [0u8; NONCE_LEN];
                rand::thread_rng().fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(plain);
                let (cipher, nonce) = object_cipher(&e.enc_key, &nonce);
                // Sealing fails only for a buffer of 256 GiB or more; one object is far
                // below that (a pack is 16 MiB), so the tag is always there.
                let tag = cipher
                    .seal_in_place_separate_tag(nonce, Aad::from(ad(ty)), &mut out[NONCE_LEN..])
                    .expect("object below ChaCha20-Poly1305's 256 GiB limit");
                out.extend_from_slice(tag.as_ref());
                out
            }
        }
    }

    /// Opens a sealed object that must be of type `ty`; `what` names it in errors.
    pub fn open<'a>(&self, ty: ObjectType, sealed: &'a [u8], what: &str) -> Result<Cow<'a, [u8]>> {
        match &self.encryption {
            None => Ok(Cow::Borrowed(plain_body(ty, sealed, what)?)),
            Some(e) => {
                let (nonce, body, tag) = split_sealed(sealed, what)?;
                let mut buf = body.to_vec();
                decrypt(e, ty, nonce, tag, &mut buf, what)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Opens a sealed object like [`Sealer::open`], decrypting it where it lies (no copy):
    /// returns the plaintext, a part of `sealed`. On error, `sealed` holds unspecified bytes.
    pub fn open_in_place<'a>(
        &self,
        ty: ObjectType,
        sealed: &'a mut [u8],
        what: &str,
    ) -> Result<&'a [u8]> {
        match &self.encryption {
            None => plain_body(ty, sealed, what),
            Some(e) => {
                let (nonce, body, tag) = sealed
                    .split_first_chunk_mut::<NONCE_LEN>()
                    .and_then(|(nonce, rest)| {
                        let (body, tag) = rest.split_last_chunk_mut::<TAG_LEN>()?;
                        Some((nonce, body, tag))
                    })
                    .ok_or_else(|| truncated(what))?;
                decrypt(e, ty, nonce, tag, body, what)?;
                Ok(body)
            }
        }
    }
}

/// The body of an unencrypted object, after its type byte (which must be `ty`).
fn plain_body<'a>(ty: ObjectType, sealed: &'a [u8], what: &str) -> Result<&'a [u8]> {
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

type SealedParts<'a> = (&'a [u8; NONCE_LEN], &'a [u8], &'a [u8; TAG_LEN]);

/// An encrypted object's nonce, ciphertext and tag.
fn split_sealed<'a>(sealed: &'a [u8], what: &str) -> Result<SealedParts<'a>> {
    sealed
        .split_first_chunk::<NONCE_LEN>()
        .and_then(|(nonce, rest)| {
            let (body, tag) = rest.split_last_chunk::<TAG_LEN>()?;
            Some((nonce, body, tag))
        })
        .ok_or_else(|| truncated(what))
}

fn truncated(what: &str) -> Error {
    Error::corrupt(what, "too short to be an encrypted object (truncated)")
}

/// Decrypts `body` in place and checks its tag (and that the object is of type `ty`).
fn decrypt(
    e: &Encryption,
    ty: ObjectType,
    nonce: &[u8; NONCE_LEN],
    tag: &[u8; TAG_LEN],
    body: &mut [u8],
    what: &str,
) -> Result<()> {
    let (cipher, nonce) = object_cipher(&e.enc_key, nonce);
    cipher
        .open_in_place_separate_tag(nonce, Aad::from(ad(ty)), Tag::from(*tag), body, 0..)
        .map_err(|_| {
            Error::corrupt(
                what,
                format!(
                    "authentication failed: corrupt or tampered (or not a {})",
                    ty.name()
                ),
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_in_place_gives_what_open_gives() {
        for s in [Sealer::plain(), Sealer::encrypted(&MasterKey::random())] {
            let sealed = s.seal(ObjectType::DataBlob, b"chunk content");
            let mut buf = sealed.clone();
            let plain = s
                .open_in_place(ObjectType::DataBlob, &mut buf, "x")
                .expect("open in place");
            assert_eq!(plain, b"chunk content");
            let mut wrong_type = sealed.clone();
            assert!(s
                .open_in_place(ObjectType::TreeBlob, &mut wrong_type, "x")
                .is_err());
            let mut flipped = sealed.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            let opened = s.open_in_place(ObjectType::DataBlob, &mut flipped, "x");
            if s.is_encrypted() {
                assert!(opened.is_err(), "a flipped tag bit must fail");
            }
            let mut short = sealed[..s.overhead() - 1].to_vec();
            assert!(s
                .open_in_place(ObjectType::DataBlob, &mut short, "x")
                .is_err());
        }
    }

    #[test]
    fn type_confusion_is_rejected_plain_and_encrypted() {
        for s in [Sealer::plain(), Sealer::encrypted(&MasterKey::random())] {
            let sealed = s.seal(ObjectType::TreeBlob, b"listing");
            assert_eq!(
                s.open(ObjectType::TreeBlob, &sealed, "x")
                    .expect("open")
                    .as_ref(),
                b"listing"
            );
            let err = s
                .open(ObjectType::DataBlob, &sealed, "x")
                .expect_err("must refuse");
            assert!(err.to_string().contains("tampered"), "{err}");
            assert!(s.open(ObjectType::DataBlob, &[], "x").is_err());
        }
    }

    #[test]
    fn encrypted_objects_hide_content_and_detect_every_flipped_bit() {
        let s = Sealer::encrypted(&MasterKey::random());
        let secret = b"distinctive plaintext 0123456789";
        let sealed = s.seal(ObjectType::DataBlob, secret);
        assert_eq!(sealed.len(), secret.len() + s.overhead());
        assert!(!sealed.windows(8).any(|w| secret.windows(8).any(|p| p == w)));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                s.open(ObjectType::DataBlob, &bad, "x").is_err(),
                "flip at {i}"
            );
        }
        // Same content, fresh nonce: different ciphertext.
        assert_ne!(sealed, s.seal(ObjectType::DataBlob, secret));
        // Another key cannot open it.
        let other = Sealer::encrypted(&MasterKey::random());
        assert!(other.open(ObjectType::DataBlob, &sealed, "x").is_err());
    }

    #[test]
    fn keyed_ids_differ_from_plain_ids_and_between_keys() {
        let a = Sealer::encrypted(&MasterKey::random());
        let b = Sealer::encrypted(&MasterKey::random());
        let data = b"same content";
        assert_ne!(a.blob_id(data), Sealer::plain().blob_id(data));
        assert_ne!(a.blob_id(data), b.blob_id(data));
        assert_eq!(a.blob_id(data), a.blob_id(data));
        assert_eq!(Sealer::plain().blob_id(data), BlobId::hash(data));
    }

    /// Repositories written before objects went through ring hold the bytes of the
    /// `chacha20poly1305` crate's XChaCha20-Poly1305: both must read what the other wrote,
    /// at every length around the 64-byte block and the 16-byte Poly1305 block.
    #[test]
    fn objects_are_the_bytes_of_the_reference_xchacha20_poly1305() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

        let key = MasterKey::random();
        let s = Sealer::encrypted(&key);
        let reference = XChaCha20Poly1305::new(Key::from_slice(&key.enc));
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            for ty in [ObjectType::DataBlob, ObjectType::Index] {
                // Ours, opened by the reference.
                let sealed = s.seal(ty, &plain);
                let (nonce, rest) = sealed.split_at(NONCE_LEN);
                let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
                let mut buf = body.to_vec();
                reference
                    .decrypt_in_place_detached(
                        XNonce::from_slice(nonce),
                        &ad(ty),
                        &mut buf,
                        Tag::from_slice(tag),
                    )
                    .expect("the reference opens our object");
                assert_eq!(buf, plain, "len {len}");
                // The reference's, opened by us.
                let nonce = [len as u8; NONCE_LEN];
                let mut body = plain.clone();
                let tag = reference
                    .encrypt_in_place_detached(XNonce::from_slice(&nonce), &ad(ty), &mut body)
                    .expect("reference seals");
                let mut theirs = nonce.to_vec();
                theirs.extend_from_slice(&body);
                theirs.extend_from_slice(&tag);
                assert_eq!(s.open(ty, &theirs, "x").expect("open").as_ref(), &plain[..]);
            }
        }
    }

    #[test]
    fn master_key_round_trips_through_bytes() {
        let k = MasterKey::random();
        let back = MasterKey::from_bytes(&k.to_bytes());
        assert_eq!(k.to_bytes(), back.to_bytes());
    }
}
