//! The process's memory as the operating system sees it, and giving freed memory back.
//!
//! A one-shot command returns everything when it exits. The daemon does not exit: after a
//! backup, check or drill has freed its buffers, glibc's allocator keeps the freed pages of
//! its per-thread arenas for reuse (it only shrinks an arena from its top), so an idle daemon
//! stayed at the size of its last big task: 110 MiB after a `check --read-data` of the 2 GiB
//! benchmark repository, 70 MiB with 2 arenas. Every command caps the arenas at 2
//! ([`limit_arenas`], which also lowers a full backup's peak), and the daemon calls
//! [`release_free`] whenever its last run or task ends, which returns those pages (19-38 MiB
//! idle after that check).

/// Resident memory of this process in bytes (`/proc/self/statm`), or `None` where that file
/// cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Returns the allocator's free memory to the operating system: every arena's free pages,
/// not only those at an arena's top. Costs a walk of the free lists (milliseconds); meant for
/// the moments a long-lived process has just finished big work.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free() {
    // SAFETY: malloc_trim(3) takes a byte count, no pointer, and touches only the allocator's
    // own free lists, each under its arena's lock (glibc's manual: MT-Safe), so it is sound
    // from any thread at any time; it never moves or frees memory that is in use. Rust's
    // global allocator on this target is this same malloc (std's System allocator).
    // The return value (whether anything was released) carries no error.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's returns freed memory itself): nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free() {}

/// Caps glibc's malloc arenas at `n`, unless the environment already sets the cap
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). glibc gives each
/// busy thread its own arena, up to 8 per core, and [`release_free`] cannot shrink the free
/// space at the top of the extra arenas (glibc trims those only past a threshold that grows
/// to 64 MiB with the buffer sizes seen); with 2 arenas nearly all freed memory is in reach.
/// Called first thing in `main`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas(n: i32) {
    if arena_cap_set_outside(
        std::env::var_os("MALLOC_ARENA_MAX").is_some(),
        std::env::var("GLIBC_TUNABLES").ok().as_deref(),
    ) {
        return;
    }
    // SAFETY: mallopt(3) takes two integers, no pointer. M_ARENA_MAX only bounds how many
    // arenas glibc creates from now on; threads keep using the arenas they have, and every
    // block stays valid and is freed into the arena it came from. glibc reads and writes the
    // setting under its own lock (mallopt is MT-Safe), so calling it with threads running is
    // sound. A refusal (return 0) leaves the allocator as it was.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
}

/// Whether the operator already set glibc's arena cap, which then stands.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn arena_cap_set_outside(malloc_arena_max: bool, glibc_tunables: Option<&str>) -> bool {
    malloc_arena_max
        || glibc_tunables.is_some_and(|t| {
            t.split(':')
                .any(|kv| kv.split('=').next() == Some("glibc.malloc.arena_max"))
        })
}

/// Other allocators: nothing to cap.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas(_n: i32) {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    const CHILD: &str = "LIFEBOAT_TEST_MEMORY_CHILD";

    /// A thread fills its arena with 64 MiB of 32 KiB blocks (below glibc's mmap threshold,
    /// so they come from the arena), then frees all but every 64th: the free pages lie between
    /// blocks in use, where glibc's own trimming (the arena's top only) cannot reach them.
    /// `release_free` must give them back. Measured in a child process of this test binary
    /// running only this test: resident memory is the whole process's, and other tests run
    /// in parallel threads here.
    #[test]
    fn release_free_returns_pages_freed_between_blocks_in_use() {
        if std::env::var_os(CHILD).is_some() {
            let kept = std::thread::spawn(|| {
                let blocks: Vec<Vec<u8>> = (0..2048).map(|i| vec![i as u8 | 1; 32 << 10]).collect();
                blocks.into_iter().step_by(64).collect::<Vec<_>>()
            })
            .join()
            .expect("allocating thread");
            let before = resident_bytes().expect("statm");
            release_free();
            let after = resident_bytes().expect("statm");
            assert_eq!(kept.len(), 32);
            println!("resident before={before} after={after}");
            return;
        }
        let me = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(me)
            .args([
                "--exact",
                "memory::tests::release_free_returns_pages_freed_between_blocks_in_use",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("resident before=").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no measurement in the child's output: {stdout}"));
        let (before, after) = line.split_once(" after=").expect("both figures");
        let (before, after): (u64, u64) = (
            before.parse().expect("number"),
            after.parse().expect("number"),
        );
        let mib = 1 << 20;
        assert!(
            before > 60 * mib,
            "the freed blocks were not resident before: {before}"
        );
        assert!(
            before - after.min(before) > 48 * mib,
            "release_free gave back only {} of {} MiB resident",
            (before - after.min(before)) / mib,
            before / mib
        );
    }

    #[test]
    fn an_arena_cap_set_by_the_operator_stands() {
        assert!(!arena_cap_set_outside(false, None));
        assert!(arena_cap_set_outside(true, None));
        assert!(arena_cap_set_outside(
            false,
            Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4")
        ));
        assert!(!arena_cap_set_outside(
            false,
            Some("glibc.malloc.arena_test=2:glibc.malloc.tcache_count=0")
        ));
    }

    #[test]
    fn resident_bytes_reads_this_process() {
        let r = resident_bytes().expect("statm");
        // This test binary maps at least its own code; an obviously wrong unit would be off by 4096x.
        assert!(r > (1 << 20) && r < (64 << 30), "{r}");
    }
}
