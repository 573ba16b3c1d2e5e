//! Moving a module's data files to another node: chunk by chunk, and then only the
//! chunks that changed.
//!
//! A module's data is copied twice. First whole, while it serves: the file is read in
//! chunks of [`CHUNK`] bytes, a batch at a time ([`Changes`]: a file of any size in
//! the memory of one batch), and sent, and the sender remembers a hash of each chunk
//! it sent ([`Sent`]). Then, with the module's work held and its files settled (no
//! write pending in a journal), the file is read again and only the chunks whose hash
//! changed — and the new length — are sent: while the module waits, the file is read
//! and hashed once more and checked on both sides, but only its changes cross the
//! network. The receiver writes each chunk at its offset ([`apply`]) and both compare
//! the SHA-256 of the whole file ([`digest`]) before the copy is used.
//!
//! A batch of chunks travels as one body ([`Chunks::encode`]): the file's length, then
//! each chunk's offset, size and bytes.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The unit a file is compared and sent in.
pub const CHUNK: usize = 64 * 1024;

/// The most chunk bytes one batch carries (a mesh admin body is bounded).
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What the receiver holds of one file, as the sender last sent it: a hash per chunk.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    hashes: Vec<[u8; 32]>,
}

/// Chunks of a file to write at their offsets, and the length the file ends at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunks {
    /// The file's length once every chunk is written.
    pub len: u64,
    /// Each chunk's offset and bytes.
    pub chunks: Vec<(u64, Vec<u8>)>,
}

impl Chunks {
    /// The bytes of every chunk.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// The batch as a body: `len` (u64), then per chunk its offset (u64), size (u32)
    /// and bytes, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes() + 8 + 12 * self.chunks.len());
        out.extend_from_slice(&self.len.to_be_bytes());
        for (offset, bytes) in &self.chunks {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads a batch [`Self::encode`] wrote; refuses one that is cut short, or whose
    /// chunks are larger than [`CHUNK`] or reach past its length.
    pub fn decode(body: &[u8]) -> Result<Chunks> {
        let mut rest = body;
        let mut take = |n: usize| -> Result<&[u8]> {
            if rest.len() < n {
                bail!("the batch of chunks is cut short");
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let len = u64::from_be_bytes(take(8)?.try_into()?);
        let mut chunks = Vec::new();
        let mut left = body.len() - 8;
        while left > 0 {
            let offset = u64::from_be_bytes(take(8)?.try_into()?);
            let size = u32::from_be_bytes(take(4)?.try_into()?) as usize;
            if size > CHUNK || offset.saturating_add(size as u64) > len {
                bail!("a chunk at {offset} of {size} bytes does not fit a file of {len}");
            }
            chunks.push((offset, take(size)?.to_vec()));
            left = left.saturating_sub(12 + size);
        }
        Ok(Chunks { len, chunks })
    }
}

impl Sent {
    /// Starts reading `file` for the chunks that differ from what was sent (all of
    /// them, the first time): [`Changes::next_batch`] reads them a batch at a time,
    /// so a file of any size is sent in the memory of one batch.
    pub fn changes(self, file: &Path) -> Result<Changes> {
        let input =
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        let len = input.metadata()?.len();
        Ok(Changes {
            // The file may grow while it is read (its module serves meanwhile): what
            // it held when it was opened is sent now, what comes after with the next
            // changes.
            input: input.take(len),
            len,
            sent: self,
            index: 0,
            batches: 0,
            finished: false,
        })
    }
}

/// A file being read for what changed since it was last sent.
pub struct Changes {
    input: std::io::Take<std::fs::File>,
    /// The length the file had when it was opened: every batch carries it.
    len: u64,
    sent: Sent,
    /// The next chunk to read.
    index: usize,
    /// How many batches were read so far.
    batches: usize,
    finished: bool,
}

impl Changes {
    /// The next batch of changed chunks (at most [`BATCH_BYTES`] of them), each
    /// recorded as sent; `None` once the file is read through. The first batch comes
    /// even when nothing changed: it carries the file's length.
    pub fn next_batch(&mut self) -> Result<Option<Chunks>> {
        let mut batch = Chunks {
            len: self.len,
            chunks: Vec::new(),
        };
        let mut buffer = vec![0u8; CHUNK];
        while !self.finished && batch.bytes() + CHUNK <= BATCH_BYTES {
            let read = read_full(&mut self.input, &mut buffer)?;
            if read == 0 {
                self.finish();
                break;
            }
            let hash: [u8; 32] = Sha256::digest(&buffer[..read]).into();
            let hashes = &mut self.sent.hashes;
            if hashes.get(self.index) != Some(&hash) {
                let offset = (self.index * CHUNK) as u64;
                batch.chunks.push((offset, buffer[..read].to_vec()));
                if self.index < hashes.len() {
                    hashes[self.index] = hash;
                } else {
                    hashes.push(hash);
                }
            }
            self.index += 1;
            if read < CHUNK {
                self.finish();
            }
        }
        // Unchanged chunks add nothing to the batch, so the loop reads on through
        // them: an empty batch means the file was read through.
        if batch.chunks.is_empty() && self.batches > 0 {
            return Ok(None);
        }
        self.batches += 1;
        Ok(Some(batch))
    }

    /// The file read through: what lay past its end is no longer sent.
    fn finish(&mut self) {
        self.finished = true;
        self.sent.hashes.truncate(self.index);
    }

    /// What the receiver holds once every batch was sent.
    pub fn into_sent(self) -> Sent {
        self.sent
    }
}

/// Fills `buffer` from `input` as far as it goes; how many bytes were read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes `chunks` into `file` (made if missing) at their offsets, and sets its length.
pub fn apply(file: &Path, chunks: &Chunks) -> Result<()> {
    let mut output = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .with_context(|| format!("writing {}", file.display()))?;
    for (offset, bytes) in &chunks.chunks {
        output.seek(SeekFrom::Start(*offset))?;
        output.write_all(bytes)?;
    }
    output.set_len(chunks.len)?;
    output.sync_all()?;
    Ok(())
}

/// The SHA-256 of `file`'s bytes, in hex.
pub fn digest(file: &Path) -> Result<String> {
    let mut input =
        std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = read_full(&mut input, &mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every batch of `file`'s changes since `sent`, `sent` brought up to date.
    fn batches(sent: &mut Sent, file: &Path) -> Vec<Chunks> {
        let mut changes = std::mem::take(sent).changes(file).unwrap();
        let mut batches = Vec::new();
        while let Some(batch) = changes.next_batch().unwrap() {
            batches.push(batch);
        }
        *sent = changes.into_sent();
        batches
    }

    /// [`batches`] in one: every changed chunk, and the length.
    fn all_changes(sent: &mut Sent, file: &Path) -> Chunks {
        let batches = batches(sent, file);
        let len = batches.first().map_or(0, |batch| batch.len);
        assert!(batches.iter().all(|batch| batch.len == len));
        Chunks {
            len,
            chunks: batches.into_iter().flat_map(|batch| batch.chunks).collect(),
        }
    }

    #[test]
    fn a_file_sent_whole_then_changed_arrives_the_same_with_only_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (source, copy) = (dir.path().join("source"), dir.path().join("copy"));
        let mut bytes: Vec<u8> = (0..CHUNK * 5 + 123).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &bytes).unwrap();
        let mut sent = Sent::default();
        let first = batches(&mut sent, &source);
        assert_eq!(first.iter().map(|b| b.chunks.len()).sum::<usize>(), 6);
        for batch in first {
            apply(&copy, &Chunks::decode(&batch.encode()).unwrap()).unwrap();
        }
        assert_eq!(digest(&copy).unwrap(), digest(&source).unwrap());

        // One byte in the third chunk changes, and the file shrinks by two chunks.
        bytes[CHUNK * 2 + 7] ^= 0xff;
        bytes.truncate(CHUNK * 3 + 10);
        std::fs::write(&source, &bytes).unwrap();
        let changes = all_changes(&mut sent, &source);
        let offsets: Vec<u64> = changes.chunks.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, [(CHUNK * 2) as u64, (CHUNK * 3) as u64]);
        apply(&copy, &Chunks::decode(&changes.encode()).unwrap()).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);

        // Nothing changed: nothing to send but the length.
        let none = all_changes(&mut sent, &source);
        assert!(none.chunks.is_empty());
        assert_eq!(none.len, bytes.len() as u64);
    }

    #[test]
    fn chunks_read_from_a_growing_file_never_reach_past_the_length_they_carry() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, vec![7u8; CHUNK + 10]).unwrap();
        // The file grows while it is read, as a serving module's does.
        let growing = source.clone();
        let writer = std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            for _ in 0..200 {
                out.write_all(&[9u8; 4096]).unwrap();
            }
        });
        let mut sent = Sent::default();
        for _ in 0..50 {
            for chunks in batches(&mut sent, &source) {
                assert!(chunks
                    .chunks
                    .iter()
                    .all(|(offset, bytes)| offset + bytes.len() as u64 <= chunks.len));
                assert!(Chunks::decode(&chunks.encode()).is_ok());
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_batch_cut_short_or_reaching_past_its_file_is_refused() {
        let batch = Chunks {
            len: 10,
            chunks: vec![(0, vec![1; 10])],
        };
        let body = batch.encode();
        assert_eq!(Chunks::decode(&body).unwrap(), batch);
        assert!(Chunks::decode(&body[..body.len() - 1]).is_err());
        let past = Chunks {
            len: 4,
            chunks: vec![(0, vec![1; 10])],
        };
        assert!(Chunks::decode(&past.encode()).is_err());
        let huge = Chunks {
            len: u64::MAX,
            chunks: vec![(0, vec![0; CHUNK + 1])],
        };
        assert!(Chunks::decode(&huge.encode()).is_err());
    }

    /// A file many batches long is read a batch at a time (none past its bound, the
    /// copy the same), and a second read of it unchanged sends its length alone.
    #[test]
    fn a_large_file_goes_a_batch_at_a_time_and_unchanged_as_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let (source, copy) = (dir.path().join("source"), dir.path().join("copy"));
        let bytes: Vec<u8> = (0..BATCH_BYTES * 3 + CHUNK / 2)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&source, &bytes).unwrap();
        let mut sent = Sent::default();
        let mut changes = std::mem::take(&mut sent).changes(&source).unwrap();
        let mut count = 0;
        while let Some(batch) = changes.next_batch().unwrap() {
            assert!(batch.bytes() <= BATCH_BYTES);
            apply(&copy, &batch).unwrap();
            count += 1;
        }
        sent = changes.into_sent();
        assert_eq!(count, 4);
        assert_eq!(digest(&copy).unwrap(), digest(&source).unwrap());
        let again = batches(&mut sent, &source);
        assert_eq!(again.len(), 1);
        assert!(again[0].chunks.is_empty());
        assert_eq!(again[0].len, bytes.len() as u64);
    }
}
