//! The one place every stored byte goes through: `seal` before storage, `open` after; and the
//! one place chunk ids are computed.
//!
//! Unencrypted repositories: a sealed object is its one-byte [`ObjectType`] tag followed by the
//! plaintext; the tag is checked on `open`, so a directory listing can never be read as file
//! data, nor an index as a snapshot. Chunk ids are plain BLAKE3.
//!
//! Encrypted repositories: an AEAD with a 192-bit nonce, [`Cipher::Xaes256Gcm`] (XAES-256-GCM,
//! the default where the CPU has AES instructions) or [`Cipher::XChaCha20Poly1305`], under the
//! repository's master key with a random nonce per object (random nonces of this size never
//! collide in practice, so no nonce state is kept anywhere): `nonce (24) | ciphertext | tag
//! (16)`, for both. The associated data binds the
//! format and the object type, so an object of one type fails authentication when opened as
//! another. Chunk ids are BLAKE3 keyed with a separate 256-bit key, so ids reveal nothing
//! about content to someone without the key.

use std::borrow::Cow;
use std::sync::Arc;

use aes::cipher::{BlockEncrypt, KeyInit};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
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

/// Bytes of an object's nonce (192 bits, for both ciphers).
pub const NONCE_LEN: usize = 24;
/// Bytes of an object's authentication tag (Poly1305 or GCM).
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
    /// A new random key that gives chunks the ids `other` gives them (its id key, a new
    /// encryption key): a repository made with it deduplicates against copies from `other`'s
    /// (`init --copy-params-from`), and reveals to whoever holds `other` no more than ids.
    pub fn sharing_ids_with(other: &MasterKey) -> Self {
        let mut k = MasterKey::random();
        k.id = other.id;
        k
    }

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

/// The AEAD that seals a repository's objects (the repository config names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// XAES-256-GCM (C2SP): AES-256-GCM under a key derived per object from the master key and
    /// the first 12 bytes of the nonce (two AES-256 block operations, NIST SP 800-108 counter
    /// mode with a CMAC-style subkey); the last 12 bytes are GCM's nonce. With AES instructions
    /// it runs at several GB/s, about four times ChaCha20-Poly1305.
    Xaes256Gcm,
    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha): the same speed with or without special
    /// instructions.
    XChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher a repository can use.
    pub const ALL: [Cipher; 2] = [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305];

    /// Its name in the repository config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Xaes256Gcm => "xaes-256-gcm",
            Cipher::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }

    /// The cipher of this name.
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Every cipher's name, for messages: "xaes-256-gcm or xchacha20-poly1305".
    pub fn names() -> String {
        let names: Vec<&str> = Cipher::ALL.iter().map(|c| c.name()).collect();
        names.join(" or ")
    }

    /// The faster cipher on this machine: XAES-256-GCM where the CPU has AES and carry-less
    /// multiplication instructions (x86-64 AES-NI and PCLMULQDQ, ARMv8 AES and PMULL), else
    /// XChaCha20-Poly1305 (AES in software is several times slower).
    pub fn preferred() -> Cipher {
        if hardware_aes() {
            Cipher::Xaes256Gcm
        } else {
            Cipher::XChaCha20Poly1305
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn hardware_aes() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn hardware_aes() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn hardware_aes() -> bool {
    false
}

struct Encryption {
    enc_key: [u8; 32],
    id_key: [u8; 32],
    mac_key: [u8; 32],
    objects: ObjectKeys,
}

/// What the per-object keys are derived with.
enum ObjectKeys {
    XChaCha,
    /// AES-256 under the master encryption key (round keys wiped on drop by the `aes` crate's
    /// `zeroize` feature) and the CMAC subkey K1 = dbl(AES-256(0^128)).
    Xaes {
        aes: Box<aes::Aes256>,
        k1: [u8; 16],
    },
}

impl ObjectKeys {
    fn new(cipher: Cipher, enc_key: &[u8; 32]) -> Self {
        match cipher {
            Cipher::XChaCha20Poly1305 => ObjectKeys::XChaCha,
            Cipher::Xaes256Gcm => {
                let aes = Box::new(aes::Aes256::new(enc_key.into()));
                let mut block = aes::Block::default();
                aes.encrypt_block(&mut block);
                // dbl(L): shift the 128-bit big-endian value left by one; if a bit fell off,
                // xor the low byte with 0x87 (the CMAC subkey of NIST SP 800-38B).
                let mut l = u128::from_be_bytes(block.into());
                block.zeroize();
                let mut k1 = (l << 1) ^ if l >> 127 == 1 { 0x87 } else { 0 };
                let keys = ObjectKeys::Xaes {
                    aes,
                    k1: k1.to_be_bytes(),
                };
                l.zeroize();
                k1.zeroize();
                keys
            }
        }
    }
}

impl Drop for Encryption {
    fn drop(&mut self) {
        self.enc_key.zeroize();
        self.id_key.zeroize();
        self.mac_key.zeroize();
        if let ObjectKeys::Xaes { k1, .. } = &mut self.objects {
            k1.zeroize();
        }
    }
}

/// The AEAD key and 96-bit nonce that seal or open one object with this 192-bit nonce.
fn object_cipher(e: &Encryption, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    match &e.objects {
        ObjectKeys::XChaCha => xchacha_cipher(&e.enc_key, nonce),
        ObjectKeys::Xaes { aes, k1 } => xaes_cipher(aes, k1, nonce),
    }
}

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) for one object: the first 16 bytes of the
/// 24-byte nonce and the key give a subkey (HChaCha20); ChaCha20-Poly1305 (RFC 8439) with
/// that subkey and the nonce `0000 || nonce[16..24]` does the rest. The bytes are those of
/// the `chacha20poly1305` crate's `XChaCha20Poly1305` (a test below holds both to that).
fn xchacha_cipher(enc_key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
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

/// XAES-256-GCM (https://c2sp.org/XAES-256-GCM) for one object:
/// `Kx = AES(K, M1 ^ K1) || AES(K, M2 ^ K1)` with `Mi = 00 || i || "X" || 00 || nonce[..12]`,
/// then AES-256-GCM under `Kx` with the nonce `nonce[12..24]`. The specification's test vectors
/// hold it to that (tests below).
fn xaes_cipher(aes: &aes::Aes256, k1: &[u8; 16], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let mut kx = xaes_key(aes, k1, nonce);
    // A 32-byte key is the one length AES_256_GCM takes, and `kx` is 32 bytes, so this cannot
    // fail.
    let unbound = UnboundKey::new(&AES_256_GCM, &kx);
    kx.zeroize();
    let key = LessSafeKey::new(unbound.expect("32-byte AES-256-GCM key"));
    let mut short = [0u8; 12];
    short.copy_from_slice(&nonce[12..]);
    (key, Nonce::assume_unique_for_key(short))
}

/// XAES-256-GCM's per-object key `Kx`.
fn xaes_key(aes: &aes::Aes256, k1: &[u8; 16], nonce: &[u8; NONCE_LEN]) -> [u8; 32] {
    let mut kx = [0u8; 32];
    for (i, half) in kx.chunks_exact_mut(16).enumerate() {
        let mut m = [0u8; 16];
        m[1] = i as u8 + 1;
        m[2] = b'X';
        m[4..].copy_from_slice(&nonce[..12]);
        for (b, k) in m.iter_mut().zip(k1) {
            *b ^= k;
        }
        let mut block = aes::Block::from(m);
        aes.encrypt_block(&mut block);
        half.copy_from_slice(&block);
        block.zeroize();
    }
    kx
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

    /// Encrypted with `key` and XChaCha20-Poly1305.
    pub fn encrypted(key: &MasterKey) -> Self {
        Sealer::encrypted_with(key, Cipher::XChaCha20Poly1305)
    }

    /// Encrypted with `key` and `cipher`.
    pub fn encrypted_with(key: &MasterKey, cipher: Cipher) -> Self {
        Sealer {
            encryption: Some(Arc::new(Encryption {
                enc_key: key.enc,
                id_key: key.id,
                mac_key: key.config_mac_key(),
                objects: ObjectKeys::new(cipher, &key.enc),
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
                let (cipher, nonce) = object_cipher(e, &nonce);
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
    let (cipher, nonce) = object_cipher(e, nonce);
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

    /// The test vectors of https://c2sp.org/XAES-256-GCM: key 01..01 without associated data
    /// (MSB of L clear) and key 03..03 with it (MSB set): both branches of the subkey.
    #[test]
    fn xaes_256_gcm_matches_the_specification_vectors() {
        let nonce = *b"ABCDEFGHIJKLMNOPQRSTUVWX";
        let vectors: [(u8, &[u8], &str); 2] = [
            (
                1,
                b"",
                "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
            ),
            (
                3,
                b"c2sp.org/XAES-256-GCM",
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ];
        for (byte, aad, expected) in vectors {
            let ObjectKeys::Xaes { aes, k1 } = ObjectKeys::new(Cipher::Xaes256Gcm, &[byte; 32])
            else {
                panic!("XAES keys expected");
            };
            if byte == 1 {
                assert_eq!(
                    hex::encode(xaes_key(&aes, &k1, &nonce)),
                    "c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b"
                );
            }
            let (key, n) = xaes_cipher(&aes, &k1, &nonce);
            let mut data = b"XAES-256-GCM".to_vec();
            key.seal_in_place_append_tag(n, Aad::from(aad), &mut data)
                .expect("seal");
            assert_eq!(hex::encode(&data), expected);
            let (key, n) = xaes_cipher(&aes, &k1, &nonce);
            let plain = key
                .open_in_place(n, Aad::from(aad), &mut data)
                .expect("open");
            assert_eq!(plain, b"XAES-256-GCM");
        }
    }

    #[test]
    fn each_cipher_opens_its_own_objects_only() {
        let key = MasterKey::random();
        let xaes = Sealer::encrypted_with(&key, Cipher::Xaes256Gcm);
        let xchacha = Sealer::encrypted_with(&key, Cipher::XChaCha20Poly1305);
        for (a, b) in [(&xaes, &xchacha), (&xchacha, &xaes)] {
            for ty in [
                ObjectType::DataBlob,
                ObjectType::Index,
                ObjectType::Snapshot,
            ] {
                let sealed = a.seal(ty, b"some object");
                assert_eq!(sealed.len(), b"some object".len() + a.overhead());
                assert_eq!(
                    a.open(ty, &sealed, "x").expect("own").as_ref(),
                    b"some object"
                );
                let err = b.open(ty, &sealed, "x").expect_err("other cipher");
                assert!(err.to_string().contains("authentication failed"), "{err}");
            }
            // Ids and the config MAC depend on the key only: a repository's chunk ids do not
            // change with its cipher.
            assert_eq!(a.blob_id(b"chunk"), b.blob_id(b"chunk"));
            assert_eq!(a.config_mac(b"config"), b.config_mac(b"config"));
        }
        assert!(Cipher::from_name(Cipher::preferred().name()).is_some());
        assert_eq!(Cipher::from_name("aes"), None);
    }

    #[test]
    fn open_in_place_gives_what_open_gives() {
        let key = MasterKey::random();
        for s in [
            Sealer::plain(),
            Sealer::encrypted_with(&key, Cipher::Xaes256Gcm),
            Sealer::encrypted_with(&key, Cipher::XChaCha20Poly1305),
        ] {
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
        for cipher in Cipher::ALL {
            let s = Sealer::encrypted_with(&MasterKey::random(), cipher);
            let secret = b"distinctive plaintext 0123456789";
            let sealed = s.seal(ObjectType::DataBlob, secret);
            assert_eq!(sealed.len(), secret.len() + s.overhead());
            assert!(!sealed.windows(8).any(|w| secret.windows(8).any(|p| p == w)));
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    s.open(ObjectType::DataBlob, &bad, "x").is_err(),
                    "{cipher:?}: flip at {i}"
                );
            }
            // Same content, fresh nonce: different ciphertext.
            assert_ne!(sealed, s.seal(ObjectType::DataBlob, secret));
            // Another key cannot open it.
            let other = Sealer::encrypted_with(&MasterKey::random(), cipher);
            assert!(other.open(ObjectType::DataBlob, &sealed, "x").is_err());
        }
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
