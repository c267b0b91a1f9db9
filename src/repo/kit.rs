//! The recovery kit: the master key as printable text, for offline escrow, with the commands
//! that bring the data back on a fresh machine.
//!
//! The key is written as `lbk1-` followed by 17 groups of 8 hex digits: the 64-byte master key
//! and a 4-byte checksum (BLAKE3 of the key), so a mistyped kit is recognised as such rather
//! than tried as a key. It is printed four groups a line, wrapped only between groups.
//!
//! Reading a kit ([`parse`]) takes the text as a printout, a scan or an e-mail leaves it: upper
//! or lower case, spaces, tabs and line breaks (CRLF too) anywhere in the key, also inside a
//! group, e-mail quoting (`> ` at the start of lines) and quoted-printable soft line breaks
//! (`=` at the end of a line), and any text around it.

use super::seal::{MasterKey, MASTER_KEY_LEN};
use super::snapshot::Snapshot;
use crate::display::shell_quote;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::storage::cloud::KitSettings;

const PREFIX: &str = "lbk1-";

/// Hex digits of a key: the master key and its 4-byte checksum.
const DIGITS: usize = (MASTER_KEY_LEN + 4) * 2;

/// Groups of 8 hex digits on one line of a printed key.
const GROUPS_PER_LINE: usize = 4;

/// The name the kit's commands give the kit file (in the current directory).
pub const KIT_FILE: &str = "kit.txt";

/// Where the kit's restore commands put the data.
pub const RESTORE_TARGET: &str = "/mnt/restore";

fn checksum(key: &[u8]) -> [u8; 4] {
    let h = blake3::hash(key);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.as_bytes()[..4]);
    c
}

/// The key's groups of 8 hex digits, the checksum's last.
fn groups(master: &MasterKey) -> Vec<String> {
    let mut bytes = master.to_bytes().to_vec();
    bytes.extend_from_slice(&checksum(&bytes));
    bytes.chunks(4).map(hex::encode).collect()
}

/// The key on one line (`lbk1-` and the 17 groups joined by `-`).
pub fn encode_key(master: &MasterKey) -> String {
    format!("{PREFIX}{}", groups(master).join("-"))
}

/// The key as a kit prints it: [`GROUPS_PER_LINE`] groups a line, the first line starting
/// with `lbk1-`, wrapped only between groups.
pub fn key_lines(master: &MasterKey) -> Vec<String> {
    let groups = groups(master);
    groups
        .chunks(GROUPS_PER_LINE)
        .enumerate()
        .map(|(i, line)| {
            let text = line.join("-");
            if i == 0 {
                format!("{PREFIX}{text}")
            } else {
                text
            }
        })
        .collect()
}

/// What a kit says besides the key: where the repository is and how to reach it, and what it
/// held when the kit was written.
#[derive(Debug, Clone)]
pub struct KitInfo<'a> {
    /// The repository's location as given (`--repo`, a config's `url`).
    pub location: &'a str,
    /// The repository's id (its config's).
    pub repo_id: &'a str,
    /// Storage options and credential variables ([`crate::storage::cloud::kit_settings`]).
    pub storage: &'a KitSettings,
    /// The newest snapshot of each lineage when the kit was written
    /// ([`super::select::newest_per_lineage`]): one restore command each.
    pub newest: &'a [(SnapshotId, Snapshot)],
    /// The host the recover command names when there are no snapshots yet.
    pub local_host: &'a str,
}

/// A command line for a shell: each argument quoted as needed.
fn command(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The whole kit, with instructions: the key, then the exact commands that see what the
/// repository holds, restore each job's newest snapshot, and recover each host.
pub fn render(master: &MasterKey, info: &KitInfo) -> String {
    let mut out = String::new();
    let written = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    out.push_str(&format!(
        "LIFEBOAT RECOVERY KIT\n\
         =====================\n\
         \n\
         Repository: {}\n\
         Repository id: {}\n\
         Written: {written}\n\
         \n\
         Master key (it opens every snapshot of this repository without a password;\n\
         keep it offline and secret, e.g. printed, in a safe):\n\
         \n",
        info.location, info.repo_id
    ));
    for line in key_lines(master) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\nOn a fresh machine: install lifeboat, save this whole text as {KIT_FILE} in the\n\
         current directory, and run the commands below from there.\n"
    ));
    // Every command: the subcommand, then the repository, its options and the kit.
    let base = |sub: &str| -> Vec<String> {
        let mut a = vec!["lifeboat".to_string(), sub.to_string()];
        a.extend(["--repo".to_string(), info.location.to_string()]);
        for (k, v) in &info.storage.options {
            a.extend(["--option".to_string(), format!("{k}={v}")]);
        }
        a.extend(["--recovery-kit".to_string(), KIT_FILE.to_string()]);
        a
    };
    if let Some(creds) = info.storage.credentials {
        out.push_str(&format!(
            "\nThe storage's credentials are not in this kit; set them in the environment first:\n\
             \n\x20   {creds}\n"
        ));
        // The secrets given beside the cloud's usual credential variables.
        let others: Vec<&String> = info
            .storage
            .secrets
            .iter()
            .filter(|v| !creds.contains(v.as_str()))
            .collect();
        if !others.is_empty() {
            out.push_str(
                "\nWhen this kit was written, these were set too (secrets: set them again, with \
                 their values):\n\n",
            );
            for var in others {
                out.push_str(&format!("    set {var}\n"));
            }
        }
    }
    out.push_str("\n1. See what is there (the newest snapshot of each job and host):\n\n");
    out.push_str(&format!(
        "    {}\n",
        command(&[base("snapshots"), vec!["--latest".to_string()]].concat())
    ));
    let target = RESTORE_TARGET.to_string();
    out.push_str(&format!(
        "\n2. Restore one job's newest snapshot into {RESTORE_TARGET}, verified before anything is \
         written\n   (one command per job{}):\n\n",
        if info.newest.is_empty() {
            "; there were no snapshots when this kit was written"
        } else {
            " the repository held when this kit was written"
        }
    ));
    if info.newest.is_empty() {
        let mut a = base("restore");
        a.extend(["latest".to_string(), "--target".to_string(), target.clone()]);
        out.push_str(&format!("    {}\n", command(&a)));
    }
    let mut hosts: Vec<&str> = Vec::new();
    for (id, s) in info.newest {
        if !hosts.contains(&s.host.as_str()) {
            hosts.push(&s.host);
        }
        let mut a = base("restore");
        let what = match &s.job {
            Some(job) => {
                a.extend(["--job".to_string(), job.clone()]);
                format!("job {job}")
            }
            None => "backed up by hand".to_string(),
        };
        a.extend(["--host".to_string(), s.host.clone()]);
        if s.job.is_none() {
            for p in &s.paths {
                a.extend(["--path".to_string(), p.clone()]);
            }
        }
        a.extend(["latest".to_string(), "--target".to_string(), target.clone()]);
        out.push_str(&format!(
            "    # {what}, host {}: paths {} (newest then: {}, {})\n    {}\n",
            s.host,
            s.paths.join(" "),
            id.short(),
            s.time.format("%Y-%m-%d %H:%M UTC"),
            command(&a)
        ));
    }
    if hosts.is_empty() {
        hosts.push(info.local_host);
    }
    out.push_str(&format!(
        "\n3. Or bring a whole host back: the newest snapshot of each of its jobs, into \
         {RESTORE_TARGET}:\n\n"
    ));
    for host in hosts {
        let mut a = base("recover");
        a.extend([
            "--host".to_string(),
            host.to_string(),
            "--target".to_string(),
            target.clone(),
        ]);
        out.push_str(&format!("    {}\n", command(&a)));
    }
    out.push_str(
        "\nEvery command accepts --recovery-kit (or LIFEBOAT_RECOVERY_KIT) instead of a password.\n\
         The kit stays valid when passwords change; it is invalid for any other repository.\n",
    );
    out
}

/// The text as the key's reader sees it: quoted-printable soft line breaks (`=` at the end of
/// a line) joined, e-mail quoting (`>`, with spaces, at the start of a line) removed.
fn unwrap_mail(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut joined = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut body = line;
        // Quote markers at the start of a line; a soft-broken line goes on where it stopped,
        // but its continuation is quoted too.
        loop {
            let t = body.trim_start_matches([' ', '\t']);
            match t.strip_prefix('>') {
                Some(rest) => body = rest,
                None => break,
            }
        }
        if !joined && !out.is_empty() {
            out.push('\n');
        }
        match body.strip_suffix('=') {
            Some(head) => {
                out.push_str(head);
                joined = true;
            }
            None => {
                out.push_str(body);
                joined = false;
            }
        }
    }
    out
}

/// Reads the master key from a kit's text (see the module documentation for what it
/// tolerates; everything but the key is ignored).
pub fn parse(text: &str) -> Result<MasterKey> {
    let bad = |reason: String| Error::Invalid(format!("recovery kit: {reason}"));
    let clean = unwrap_mail(text);
    let lower = clean.to_ascii_lowercase();
    let starts = prefix_ends(&lower);
    if starts.is_empty() {
        return Err(bad(format!("no key starting with \"{PREFIX}\" found")));
    }
    let mut first_error = None;
    for start in starts {
        match key_at(&lower[start..]) {
            Ok(k) => return Ok(k),
            Err(reason) => {
                first_error.get_or_insert(reason);
            }
        }
    }
    Err(bad(first_error.unwrap_or_default()))
}

/// Where the key's digits start after each `lbk1-` in `lower` (lower case), white space
/// (a line wrapped inside the prefix) allowed between its characters.
fn prefix_ends(lower: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    for (i, _) in lower.match_indices(&PREFIX[..1]) {
        let mut at = i + 1;
        let mut whole = true;
        for want in PREFIX[1..].chars() {
            let rest = &lower[at..];
            let trimmed = rest.trim_start();
            at += rest.len() - trimmed.len();
            if trimmed.starts_with(want) {
                at += want.len_utf8();
            } else {
                whole = false;
                break;
            }
        }
        if whole {
            ends.push(at);
        }
    }
    ends
}

/// The key whose digits start `text` (after `lbk1-`), or why there is none.
fn key_at(text: &str) -> std::result::Result<MasterKey, String> {
    let mut digits = String::with_capacity(DIGITS);
    let mut rest = text.chars().peekable();
    while digits.len() < DIGITS {
        match rest.peek() {
            Some(c) if c.is_ascii_hexdigit() => digits.push(*c),
            Some(c) if c.is_whitespace() || *c == '-' => {}
            _ => break,
        }
        rest.next();
    }
    if digits.len() < DIGITS {
        return Err(format!(
            "the key is too short: {} of its {DIGITS} hex digits found (a line missing, or a \
             character that is no hex digit in it?)",
            digits.len()
        ));
    }
    // A digit more right after the last group (on the same line) is a typo, not the text
    // after the key.
    let mut after = rest.skip_while(|c| *c == ' ' || *c == '\t' || *c == '-');
    if after.next().is_some_and(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "the key is too long: more than its {DIGITS} hex digits (a digit typed twice?)"
        ));
    }
    let bytes = hex::decode(&digits).map_err(|_| "the key is not hexadecimal".to_string())?;
    let (key, sum) = bytes.split_at(MASTER_KEY_LEN);
    if checksum(key) != sum {
        return Err(
            "the key's checksum does not match (a digit mistyped? compare with the printout)"
                .to_string(),
        );
    }
    let mut k = [0u8; MASTER_KEY_LEN];
    k.copy_from_slice(key);
    Ok(MasterKey::from_bytes(&k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info<'a>(settings: &'a KitSettings) -> KitInfo<'a> {
        KitInfo {
            location: "/srv/repo",
            repo_id: "abcd",
            storage: settings,
            newest: &[],
            local_host: "web1",
        }
    }

    /// A rendered kit reads back; a changed digit, a missing group, a digit too many and a
    /// text without a key are refused, each saying which.
    #[test]
    fn kit_round_trips_and_detects_typos() {
        let m = MasterKey::random();
        let settings = KitSettings::default();
        let kit = render(&m, &info(&settings));
        let back = parse(&kit).expect("parse");
        assert_eq!(back.to_bytes(), m.to_bytes());
        let line = encode_key(&m);
        let mut typo = line.clone().into_bytes();
        let i = typo.len() - 20;
        typo[i] = if typo[i] == b'0' { b'1' } else { b'0' };
        let refused = |text: &str| match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        let e = refused(std::str::from_utf8(&typo).expect("ascii"));
        assert!(e.contains("checksum"), "{e}");
        let e = refused("no key here");
        assert!(e.contains("no key"), "{e}");
        let e = refused(&line[..line.len() - 9]);
        assert!(e.contains("too short"), "{e}");
        let e = refused(&format!("{line}7\nthanks"));
        assert!(e.contains("too long"), "{e}");
    }

    /// The key is printed four groups a line, each line whole groups, the first starting with
    /// the prefix; the kit mentions the prefix nowhere else.
    #[test]
    fn the_key_wraps_between_groups() {
        let m = MasterKey::random();
        let lines = key_lines(&m);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].starts_with(PREFIX));
        for (i, l) in lines.iter().enumerate() {
            let l = l.strip_prefix(PREFIX).unwrap_or(l);
            let groups: Vec<&str> = l.split('-').collect();
            assert_eq!(groups.len(), if i == 4 { 1 } else { 4 }, "{l}");
            assert!(groups.iter().all(|g| g.len() == 8), "{l}");
        }
        let settings = KitSettings::default();
        let kit = render(&m, &info(&settings));
        assert_eq!(kit.matches(PREFIX).count(), 1, "{kit}");
    }

    /// Ways a printout, a retyping or an e-mail changes the text of a kit.
    #[derive(Debug, Clone)]
    struct Mangling {
        upper: bool,
        /// Positions (in the key's characters) of extra line breaks.
        breaks: Vec<usize>,
        crlf: bool,
        /// Spaces or tabs put before each line.
        indent: String,
        /// `> ` quoting levels.
        quotes: usize,
        /// Quoted-printable soft breaks (positions in the whole text's lines, by 1/64 of it).
        soft: Vec<usize>,
    }

    fn mangling() -> impl Strategy<Value = Mangling> {
        (
            any::<bool>(),
            proptest::collection::vec(0usize..200, 0..8),
            any::<bool>(),
            "[ \t]{0,3}",
            0usize..3,
            proptest::collection::vec(0usize..64, 0..5),
        )
            .prop_map(|(upper, breaks, crlf, indent, quotes, soft)| Mangling {
                upper,
                breaks,
                crlf,
                indent,
                quotes,
                soft,
            })
    }

    fn mangle(kit: &str, m: &Mangling) -> String {
        let mut text = kit.to_string();
        // Extra line breaks inside the key's lines, also inside a group.
        let start = text.find(PREFIX).expect("prefix") + PREFIX.len();
        let mut breaks = m.breaks.clone();
        breaks.sort_unstable();
        breaks.dedup();
        for b in breaks.iter().rev() {
            let at = start + b;
            if at < text.len() && text.is_char_boundary(at) {
                text.insert(at, '\n');
            }
        }
        if m.upper {
            text = text.to_ascii_uppercase();
        }
        // Quoted-printable soft breaks: a long line cut with "=" at the end.
        let mut lines: Vec<String> = Vec::new();
        for line in text.split('\n') {
            let cut = m
                .soft
                .iter()
                .map(|s| s * line.len() / 64)
                .find(|c| *c > 0 && *c < line.len() && line.is_char_boundary(*c));
            match cut {
                Some(c) => {
                    lines.push(format!("{}=", &line[..c]));
                    lines.push(line[c..].to_string());
                }
                None => lines.push(line.to_string()),
            }
        }
        let quote = "> ".repeat(m.quotes);
        let eol = if m.crlf { "\r\n" } else { "\n" };
        let body: Vec<String> = lines
            .iter()
            .map(|l| format!("{quote}{}{l}", m.indent))
            .collect();
        format!(
            "Subject: Fwd: the kit{eol}{eol}See below.{eol}{}{eol}-- {eol}Ops",
            body.join(eol)
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// A kit reads back whatever case, line breaks (anywhere in the key), indentation,
        /// CRLF, e-mail quoting and quoted-printable soft breaks a printout or a mail gave it,
        /// amid other text.
        #[test]
        fn a_mangled_kit_still_reads(seed in any::<[u8; 32]>(), m in mangling()) {
            let mut key = [0u8; MASTER_KEY_LEN];
            for (i, b) in key.iter_mut().enumerate() {
                *b = seed[i % 32] ^ (i as u8);
            }
            let master = MasterKey::from_bytes(&key);
            let settings = KitSettings::default();
            let kit = render(&master, &info(&settings));
            let text = mangle(&kit, &m);
            let back = parse(&text);
            prop_assert!(back.is_ok(), "{:?}\n{text}", back.err());
            prop_assert_eq!(back.ok().map(|k| k.to_bytes()), Some(master.to_bytes()));
        }

        /// One hex digit of the key changed, however the text is mangled: refused (the
        /// checksum), never read as another key.
        #[test]
        fn a_changed_digit_is_refused(
            seed in any::<[u8; 32]>(), m in mangling(), at in 0usize..136, by in 1u8..16
        ) {
            let mut key = [0u8; MASTER_KEY_LEN];
            for (i, b) in key.iter_mut().enumerate() {
                *b = seed[i % 32].wrapping_add(i as u8);
            }
            let master = MasterKey::from_bytes(&key);
            let settings = KitSettings::default();
            let kit = render(&master, &info(&settings));
            // The at-th hex digit after the prefix.
            let start = kit.find(PREFIX).expect("prefix") + PREFIX.len();
            let pos = kit[start..]
                .char_indices()
                .filter(|(_, c)| c.is_ascii_hexdigit())
                .nth(at)
                .map(|(i, _)| start + i)
                .expect("digit");
            let old = u8::from_str_radix(&kit[pos..=pos], 16).expect("hex");
            let new = format!("{:x}", (old + by) % 16);
            let typo = format!("{}{new}{}", &kit[..pos], &kit[pos + 1..]);
            let e = parse(&mangle(&typo, &m)).err().map(|e| e.to_string());
            prop_assert!(e.as_deref().is_some_and(|e| e.contains("checksum")), "{e:?}");
        }
    }
}
