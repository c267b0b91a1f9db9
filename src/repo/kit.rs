//! The recovery kit: the master key as printable text, for offline escrow.
//!
//! The key is written as `lbk1-` followed by 17 groups of 8 hex digits: the 64-byte master key
//! and a 4-byte checksum (BLAKE3 of the key), so a mistyped kit is recognised as such rather
//! than tried as a key.

use super::seal::{MasterKey, MASTER_KEY_LEN};
use crate::error::{Error, Result};

const PREFIX: &str = "lbk1-";

fn checksum(key: &[u8]) -> [u8; 4] {
    let h = blake3::hash(key);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.as_bytes()[..4]);
    c
}

/// The key line of a kit.
pub fn encode_key(master: &MasterKey) -> String {
    let mut bytes = master.to_bytes().to_vec();
    bytes.extend_from_slice(&checksum(&bytes));
    let hex = hex::encode(&bytes);
    let groups: Vec<&str> = hex
        .as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!("{PREFIX}{}", groups.join("-"))
}

/// The whole kit, with instructions.
pub fn render(master: &MasterKey, location: &str, repo_id: &str) -> String {
    let key = encode_key(master);
    let (key_a, key_b) = key.split_at(key.len() / 2);
    format!(
        "LIFEBOAT RECOVERY KIT\n\
         =====================\n\
         \n\
         Repository: {location}\n\
         Repository id: {repo_id}\n\
         Written: {}\n\
         \n\
         Master key (it opens every snapshot of this repository without a password;\n\
         keep it offline and secret, e.g. printed, in a safe):\n\
         \n\
         {key_a}\n\
         {key_b}\n\
         \n\
         To restore on a fresh machine, install lifeboat, save this text to a file, then:\n\
         \n\
         \x20   lifeboat restore --repo {location} --recovery-kit KIT-FILE latest --target /mnt/restore\n\
         \n\
         Every command accepts --recovery-kit (or LIFEBOAT_RECOVERY_KIT) instead of a password.\n\
         The kit stays valid when passwords change; it is invalid for any other repository.\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Reads the master key from a kit's text (the key lines; everything else is ignored).
pub fn parse(text: &str) -> Result<MasterKey> {
    let bad = |reason: &str| Error::Invalid(format!("recovery kit: {reason}"));
    let start = text
        .find(PREFIX)
        .ok_or_else(|| bad("no key line starting with \"lbk1-\" found"))?;
    let digits: String = text[start + PREFIX.len()..]
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let bytes = hex::decode(&digits).map_err(|_| bad("the key is not hexadecimal"))?;
    if bytes.len() != MASTER_KEY_LEN + 4 {
        return Err(bad(
            "the key has the wrong length (a line missing or mistyped?)",
        ));
    }
    let (key, sum) = bytes.split_at(MASTER_KEY_LEN);
    if checksum(key) != sum {
        return Err(bad("the key's checksum does not match (mistyped?)"));
    }
    let mut k = [0u8; MASTER_KEY_LEN];
    k.copy_from_slice(key);
    Ok(MasterKey::from_bytes(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kit_round_trips_and_detects_typos() {
        let m = MasterKey::random();
        let kit = render(&m, "/srv/repo", "abcd");
        let back = parse(&kit).expect("parse");
        assert_eq!(back.to_bytes(), m.to_bytes());
        let line = encode_key(&m);
        let mut typo = line.clone().into_bytes();
        let i = typo.len() - 20;
        typo[i] = if typo[i] == b'0' { b'1' } else { b'0' };
        assert!(parse(std::str::from_utf8(&typo).expect("ascii")).is_err());
        assert!(parse("no key here").is_err());
        assert!(parse(&line[..line.len() - 9]).is_err());
    }
}
