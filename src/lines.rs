//! Output from a host, turned into lines an operator can trust: whatever the chunking, in
//! linear time and bounded memory, with nothing a host prints able to move the cursor, clear
//! the screen or hide a line.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::transport::Stream;

/// The most of one line kept from its start. A longer line keeps this much, a note of how much
/// was cut, and its last [`LINE_END`] bytes (where a step's end marker is).
pub const LINE_START: usize = 64 * 1024;

/// The most of a cut line kept from its end.
pub const LINE_END: usize = 256;

/// Turns a byte stream into lines; a partial last line is kept until the stream ends. Each
/// byte is looked at once, and at most [`LINE_START`] + 2 × [`LINE_END`] bytes are held.
#[derive(Default)]
pub struct LineSplitter {
    /// The current line's start, up to [`LINE_START`] bytes.
    start: Vec<u8>,
    /// Once `start` is full: the latest bytes of the current line.
    end: Vec<u8>,
    /// Bytes of the current line dropped between `start` and `end`.
    cut: u64,
}

impl LineSplitter {
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(String)) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.take(&bytes[..newline]);
            emit(self.line());
            bytes = &bytes[newline + 1..];
        }
        self.take(bytes);
    }

    pub fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.start.is_empty() {
            emit(self.line());
        }
    }

    fn take(&mut self, part: &[u8]) {
        let room = LINE_START - self.start.len();
        let (start, rest) = part.split_at(room.min(part.len()));
        self.start.extend_from_slice(start);
        if rest.is_empty() {
            return;
        }
        self.end.extend_from_slice(rest);
        if self.end.len() > 2 * LINE_END {
            let drop = self.end.len() - LINE_END;
            self.cut += drop as u64;
            self.end.drain(..drop);
        }
    }

    /// The line held so far, made visible, and a fresh start.
    fn line(&mut self) -> String {
        let start = std::mem::take(&mut self.start);
        let mut end = std::mem::take(&mut self.end);
        let cut = std::mem::take(&mut self.cut);
        if end.is_empty() {
            let mut start = start;
            if start.last() == Some(&b'\r') {
                start.pop();
            }
            return visible_owned(start);
        }
        if end.last() == Some(&b'\r') {
            end.pop();
        }
        let mut cut = cut;
        if end.len() > LINE_END {
            let drop = end.len() - LINE_END;
            cut += drop as u64;
            end.drain(..drop);
        }
        if cut == 0 {
            let mut whole = start;
            whole.extend_from_slice(&end);
            return visible(&whole);
        }
        format!(
            "{} [… {cut} bytes cut: a line is kept to its first {} KiB and last {LINE_END} bytes …] {}",
            visible(&start),
            LINE_START / 1024,
            visible(&end)
        )
    }
}

/// Output read from hosts that the reporter has not yet shown, in bytes. There is one screen,
/// so there is one backlog: every host's reader waits for [`Backlog::room`] before it reads
/// more, so that hosts printing faster than the screen takes it wait (their SSH window fills)
/// instead of deployr's memory filling.
pub static BACKLOG: Backlog = Backlog {
    bytes: AtomicUsize::new(0),
    drained: Notify::const_new(),
};

pub struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    /// Readers wait while more than this is queued for the screen.
    pub const LIMIT: usize = 2 << 20;

    /// What a line costs besides its text: its place in the event, and the event's host, step,
    /// time and queue slot shared among the lines of one read.
    const PER_LINE: usize = 64;

    fn cost(lines: &[(Stream, String)]) -> usize {
        lines
            .iter()
            .map(|(_, line)| line.len() + Self::PER_LINE)
            .sum()
    }

    /// `lines` are on their way to the screen.
    pub fn queued(&self, lines: &[(Stream, String)]) {
        self.bytes.fetch_add(Self::cost(lines), Ordering::Relaxed);
    }

    /// `lines` have been shown (or dropped).
    pub fn shown(&self, lines: &[(Stream, String)]) {
        let cost = Self::cost(lines);
        let before = self.bytes.fetch_sub(cost, Ordering::Relaxed);
        if before >= Self::LIMIT && before - cost < Self::LIMIT {
            self.drained.notify_waiters();
        }
    }

    /// Returns once the backlog is under [`Backlog::LIMIT`].
    pub async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.bytes.load(Ordering::Relaxed) < Self::LIMIT {
                return;
            }
            drained.await;
        }
    }
}

/// [`visible`] for bytes deployr owns: plain text (the usual case) becomes the string without
/// a copy.
fn visible_owned(bytes: Vec<u8>) -> String {
    if is_plain(&bytes) {
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => visible(error.as_bytes()),
        }
    } else {
        visible(&bytes)
    }
}

/// No control character in `bytes`, if they are UTF-8: none below space but tab, no DEL, and
/// no C1 control (U+0080 to U+009F, encoded as 0xC2 0x80 to 0xC2 0x9F).
fn is_plain(bytes: &[u8]) -> bool {
    // Printable ASCII and tab, the usual case, in one pass the compiler can vectorise.
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return true;
    }
    !bytes.iter().enumerate().any(|(i, &b)| {
        (b < 0x20 && b != b'\t')
            || b == 0x7f
            || (b == 0xc2
                && bytes
                    .get(i + 1)
                    .is_some_and(|next| (0x80..0xa0).contains(next)))
    })
}

/// `bytes` as text that shows what it holds: invalid UTF-8 as `�`, and every control character
/// but tab written out (`\x1b`, `\r`, `\x00`), so that no host can rewrite the operator's
/// screen or smuggle a fake line into a log.
pub fn visible(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into_owned();
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => shown.push(c),
            '\r' => shown.push_str("\\r"),
            c if c.is_control() => shown.push_str(&format!("\\x{:02x}", c as u32)),
            c => shown.push(c),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter.push(chunk, &mut |l| lines.push(l));
        }
        splitter.finish(&mut |l| lines.push(l));
        lines
    }

    #[test]
    fn splits_lines_across_chunks_and_keeps_the_tail() {
        assert_eq!(split(&[b"one\ntw", b"o\r\nthr"]), ["one", "two", "thr"]);
    }

    #[test]
    fn control_characters_but_tab_are_written_out() {
        assert_eq!(
            split(&[b"\x1b[2Jclear\tme\x07\rover\x00\n"]),
            ["\\x1b[2Jclear\tme\\x07\\rover\\x00"]
        );
        assert_eq!(visible("\u{9b}31m".as_bytes()), "\\x9b31m");
    }

    #[test]
    fn a_long_line_keeps_its_start_its_end_and_says_how_much_was_cut() {
        let mut long = vec![b'a'; LINE_START];
        long.extend(vec![b'b'; 1_000_000]);
        long.extend(b"THE END\n");
        let chunks: Vec<&[u8]> = long.chunks(4096).collect();
        let lines = split(&chunks);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.starts_with(&"a".repeat(LINE_START)));
        assert!(line.ends_with("bbbTHE END"), "{}", &line[line.len() - 40..]);
        let kept = LINE_END - "THE END".len();
        assert!(
            line.contains(&format!("[… {} bytes cut", 1_000_000 - kept)),
            "{}",
            &line[LINE_START..LINE_START + 100]
        );
        assert!(line.len() < LINE_START + 2 * LINE_END + 200);
    }

    #[test]
    fn a_line_just_over_the_start_is_kept_whole() {
        let mut long = vec![b'a'; LINE_START + 10];
        long.push(b'\n');
        assert_eq!(split(&[&long]), ["a".repeat(LINE_START + 10)]);
    }
}
