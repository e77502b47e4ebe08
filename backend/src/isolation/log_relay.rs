//! A worker's log lines, relayed into the daemon's log.
//!
//! WHY: a worker that inherited the daemon's standard error would hold the
//! daemon's log file (or journal socket) open for writing — a descriptor of
//! the host's it does not need — and could write to it without a limit, in
//! any shape, lines that look like the daemon's own. Instead its standard
//! error is a pipe the monitor reads: each line is bounded, rate-limited,
//! stripped of control characters and logged again by the daemon with the
//! controller and the worker's pid attached by the monitor (not claimed by
//! the worker). The worker writes JSON lines (`PVUSB_LOG_FORMAT=json`, set
//! by the monitor), so their level and fields survive; anything else (a
//! panic's message, an early `eprintln!`) is relayed as a warning.
//!
//! Relayed lines have the target `pvusb_worker`.

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::ratelimit::{RateLimiter, Verdict};

/// The longest line relayed; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 4096;

/// Lines per second one worker may put into the daemon's log (its
/// guest-triggered lines have their own, lower budget inside the worker).
pub const LINES_PER_SECOND: u32 = 200;

/// One relay thread, ended by the worker's death (the pipe's end).
#[derive(Debug)]
pub struct Relay {
    done: mpsc::Receiver<()>,
}

impl Relay {
    /// Starts relaying `pipe`, the standard error of the worker `pid` of
    /// controller `ctl`.
    pub fn spawn(pipe: impl Read + Send + 'static, ctl: String, pid: u32) -> std::io::Result<Self> {
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("log-{ctl}"))
            .spawn(move || {
                let mut limiter = RateLimiter::new(LINES_PER_SECOND);
                for_each_line(pipe, |line| {
                    if let Verdict::Log { suppressed } = limiter.check() {
                        if suppressed > 0 {
                            tracing::warn!(target: "pvusb_worker", ctl, pid, suppressed,
                                "suppressed {suppressed} log lines of the worker");
                        }
                        emit(&ctl, pid, &render(line));
                    }
                });
                let _ = tx.send(());
            })?;
        Ok(Self { done })
    }

    /// Waits up to `limit` for the relay to reach the pipe's end, so the
    /// worker's last words are logged before the monitor says it died.
    pub fn finish(self, limit: Duration) {
        let _ = self.done.recv_timeout(limit);
    }
}

/// Calls `f` with each line of `input` (without its newline), each cut to
/// [`MAX_LINE`] bytes; reads in bounded chunks, so no line sizes a buffer.
pub fn for_each_line(mut input: impl Read, mut f: impl FnMut(&[u8])) {
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                f(&line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        f(&line);
    }
}

/// A relayed line: its level as the worker said it, and its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`; `WARN` for a line that
    /// is not the worker's JSON.
    pub level: &'static str,
    /// The message and the event's other fields, without control
    /// characters.
    pub text: String,
}

#[derive(Deserialize)]
struct JsonLine {
    level: String,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

/// Reads one line of the worker's output.
pub fn render(line: &[u8]) -> Rendered {
    let Ok(json) = serde_json::from_slice::<JsonLine>(line) else {
        return Rendered {
            level: "WARN",
            text: clean(&String::from_utf8_lossy(line)),
        };
    };
    let level = match json.level.as_str() {
        "ERROR" => "ERROR",
        "INFO" => "INFO",
        "DEBUG" => "DEBUG",
        "TRACE" => "TRACE",
        _ => "WARN",
    };
    let mut text = match json.fields.get("message") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    for (key, value) in json.fields.iter().filter(|(k, _)| *k != "message") {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!(" {key}={value}"));
    }
    Rendered {
        level,
        text: clean(&text),
    }
}

/// Replaces control characters (terminal escapes, carriage returns) with
/// their escaped form, so a line cannot rewrite what a terminal shows.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Logs a relayed line. Debug and trace lines are logged at info with
/// their level as a field: the worker already filtered them with the
/// operator's `PVUSB_LOG`, whose per-module directives cannot match the
/// relay's one target here.
fn emit(ctl: &str, pid: u32, line: &Rendered) {
    let text = &line.text;
    match line.level {
        "ERROR" => tracing::error!(target: "pvusb_worker", ctl, pid, "{text}"),
        "INFO" => tracing::info!(target: "pvusb_worker", ctl, pid, "{text}"),
        "DEBUG" | "TRACE" => {
            tracing::info!(target: "pvusb_worker", ctl, pid, level = line.level, "{text}");
        }
        _ => tracing::warn!(target: "pvusb_worker", ctl, pid, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for_each_line(input, |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_split_and_bounded() {
        assert_eq!(lines(b"a\nbc\n\nd"), [&b"a"[..], b"bc", b"", b"d"]);
        let mut long = vec![b'x'; MAX_LINE * 3];
        long.extend_from_slice(b"\nnext\n");
        let got = lines(&long);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], b"next");
    }

    #[test]
    fn json_lines_keep_their_level_and_fields() {
        let line = br#"{"timestamp":"t","level":"ERROR","fields":{"message":"ring broken","port":3},"target":"x"}"#;
        assert_eq!(
            render(line),
            Rendered {
                level: "ERROR",
                text: "ring broken port=3".into()
            }
        );
    }

    #[test]
    fn anything_else_is_a_cleaned_warning() {
        let r = render(b"thread 'main' panicked\x1b[2J\rat x");
        assert_eq!(r.level, "WARN");
        assert!(!r.text.chars().any(char::is_control), "{:?}", r.text);
        let r = render(br#"{"level":"EVIL\u001b","fields":{"message":"a\u001b[31mb"}}"#);
        assert_eq!(r.level, "WARN");
        assert!(!r.text.chars().any(char::is_control), "{:?}", r.text);
    }
}
