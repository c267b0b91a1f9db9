//! Content-defined chunking of a stream in one reusable buffer.
//!
//! The cut points are exactly those of `fastcdc::v2020::StreamCDC` (FastCDC 2020, normalization
//! level 1) with the repository's parameters: deduplication against chunks already stored
//! depends on it, and a test compares the two on the same streams. What differs is the copying:
//! `StreamCDC` copies each chunk out of its buffer, moves the rest of the buffer to the front and
//! zero-fills the freed part after every chunk, which profiles showed as a sixth of a full
//! backup's CPU time. Here chunks are handed out as slices of the buffer, and only the part of a
//! chunk that runs past the end of the buffer is moved, once per buffer fill.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

use crate::repo::config::ChunkerParams;

/// A chunker with its buffer; one per thread, reused for every file.
pub struct Chunker {
    buf: Vec<u8>,
    min: usize,
    avg: usize,
    max: usize,
}

impl Chunker {
    /// A chunker for these (validated) parameters. Its buffer holds a maximal chunk and an
    /// average one (any size from one maximal chunk up gives the same cut points; a refill
    /// moves the unfinished chunk at the end, about an average one, to the front). Two maximal
    /// chunks per reader cost 6 MiB more at the default sizes, for fewer, larger reads.
    pub fn new(params: ChunkerParams) -> Self {
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        Chunker {
            buf: vec![0; max + avg],
            min,
            avg,
            max,
        }
    }

    /// The end of the next chunk in `data`, a cut point as FastCDC finds it.
    fn cut(&self, data: &[u8]) -> usize {
        // The parameters were checked against FastCDC's ranges when the repository's config was
        // read (RepoConfig::validate), so `FastCDC::new` does not panic on them.
        let cdc = FastCDC::new(data, self.min as u32, self.avg as u32, self.max as u32);
        cdc.cut(0, data.len()).1
    }

    /// Reads `reader` to its end and calls `each` with every chunk in order. Stops at the first
    /// error of either.
    pub fn for_each_chunk<R: Read, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (mut start, mut end, mut eof) = (0usize, 0usize, false);
        loop {
            let available = end - start;
            if !eof && available < self.max {
                // With less than a maximal chunk at hand, a cut point found strictly inside the
                // data (and with at least the average size available, so that FastCDC uses the
                // same two masks at the same offsets) is the one the whole stream would give.
                // Otherwise move the rest to the front and read more first.
                if available > self.min && available >= self.avg {
                    let cut = self.cut(&self.buf[start..end]);
                    if cut < available {
                        each(&self.buf[start..start + cut])?;
                        start += cut;
                        continue;
                    }
                }
                self.buf.copy_within(start..end, 0);
                (start, end) = (0, available);
                while end < self.buf.len() {
                    match reader.read(&mut self.buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            if available == 0 {
                return Ok(());
            }
            let cut = self.cut(&self.buf[start..end]);
            each(&self.buf[start..start + cut])?;
            start += cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::StreamCDC;
    use rand::{Rng, RngCore, SeedableRng};

    /// Hands out data in reads of random sizes (short reads happen with pipes and networks).
    struct Trickle<'a> {
        data: &'a [u8],
        rng: rand::rngs::StdRng,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self
                .rng
                .gen_range(0..=buf.len().min(self.data.len()).min(300_000));
            if n == 0 && !self.data.is_empty() && !buf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "try again"));
            }
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_cdc(data: &[u8], p: ChunkerParams) -> Vec<Vec<u8>> {
        StreamCDC::new(data, p.min_size, p.avg_size, p.max_size)
            .map(|c| c.expect("in memory").data)
            .collect()
    }

    fn ours(data: &[u8], p: ChunkerParams, seed: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let reader = Trickle {
            data,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        };
        Chunker::new(p)
            .for_each_chunk(reader, |c| -> io::Result<()> {
                out.push(c.to_vec());
                Ok(())
            })
            .expect("in memory");
        out
    }

    /// Random bytes, text-like runs, and long runs of one byte (where no cut point is found
    /// and chunks end at the maximum size).
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let n = rng.gen_range(1..200_000).min(len - at);
            match rng.gen_range(0..3) {
                0 => rng.fill_bytes(&mut data[at..at + n]),
                1 => {
                    for (i, b) in data[at..at + n].iter_mut().enumerate() {
                        *b = b"the quick brown fox 0123456789\n"[i % 31];
                    }
                }
                _ => data[at..at + n].fill(7),
            }
            at += n;
        }
        data
    }

    #[test]
    fn cuts_like_stream_cdc() {
        let small = ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        };
        for (seed, len) in [
            (1, 0),
            (2, 1),
            (3, 2047),
            (4, 2049),
            (5, 40_000),
            (6, 3 << 20),
        ] {
            let data = mixed(len, seed);
            for p in [small, ChunkerParams::default()] {
                assert_eq!(
                    ours(&data, p, seed),
                    stream_cdc(&data, p),
                    "seed {seed}, {p:?}"
                );
            }
        }
        // The repository default over data spanning many buffer fills.
        let data = mixed(24 << 20, 9);
        let p = ChunkerParams::default();
        let expected = stream_cdc(&data, p);
        assert!(expected.len() > 10);
        assert_eq!(ours(&data, p, 9), expected);
    }

    #[test]
    fn read_errors_and_callback_errors_stop_it() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk says no"))
            }
        }
        let mut c = Chunker::new(ChunkerParams::default());
        let err = c
            .for_each_chunk(Broken, |_| -> io::Result<()> { Ok(()) })
            .expect_err("read error");
        assert_eq!(err.to_string(), "disk says no");
        let data = mixed(10 << 20, 3);
        let mut calls = 0;
        let err = c
            .for_each_chunk(&data[..], |_| {
                calls += 1;
                Err(io::Error::other("stop"))
            })
            .expect_err("callback error");
        assert_eq!((err.to_string().as_str(), calls), ("stop", 1));
    }
}
