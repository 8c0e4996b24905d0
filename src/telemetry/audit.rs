//! The audit log: one JSON line per request on the `dcr` scope and per blocked request on
//! any scope. Built only from fields chosen here: no header dump, no body, so a
//! `client_secret`, `registration_access_token`, `Authorization` header or initial access
//! token has no way in.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

pub use crate::core::record::AuditLine;

enum Sink {
    Stdout,
    File(Mutex<LineWriter<std::fs::File>>),
    Disabled,
}

pub struct AuditLog {
    sink: Sink,
    /// The most recent lines, for the admin console's Decisions page: the same values the sink
    /// gets (built from chosen fields, so no secret), at most [`RECENT_LINES`], in memory only.
    recent: Mutex<VecDeque<String>>,
}

/// Lines kept by [`AuditLog::recent`].
pub const RECENT_LINES: usize = 1000;

impl AuditLog {
    fn with_sink(sink: Sink) -> AuditLog {
        AuditLog { sink, recent: Mutex::new(VecDeque::new()) }
    }

    pub fn stdout() -> AuditLog {
        AuditLog::with_sink(Sink::Stdout)
    }

    pub fn disabled() -> AuditLog {
        AuditLog::with_sink(Sink::Disabled)
    }

    pub fn file(path: &Path) -> std::io::Result<AuditLog> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog::with_sink(Sink::File(Mutex::new(LineWriter::new(f)))))
    }

    /// The last [`RECENT_LINES`] lines written, newest first.
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let lines: Vec<String> = self.recent.lock().map(|r| r.iter().rev().cloned().collect()).unwrap_or_default();
        lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn remember(&self, line: String) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT_LINES {
                r.pop_front();
            }
            r.push_back(line);
        }
    }

    pub fn is_enabled(&self) -> bool {
        !matches!(self.sink, Sink::Disabled)
    }

    /// Write one line (an [`AuditLine`], or another line type such as the admin API's
    /// `AdminAuditLine`). Errors are returned for the caller to count; a full disk must not
    /// fail the request.
    pub fn write<L: Serialize>(&self, line: &L) -> std::io::Result<()> {
        if matches!(self.sink, Sink::Disabled) {
            return Ok(());
        }
        let text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        self.remember(text);
        match &self.sink {
            Sink::Disabled => Ok(()),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()
            }
            Sink::File(f) => {
                let mut f = f.lock().map_err(|_| std::io::Error::other("audit writer poisoned"))?;
                f.write_all(&buf)
            }
        }
    }
}

pub use crate::core::record::truncate_chars;

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
    }

    #[test]
    fn file_sink_writes_one_json_line_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let log = AuditLog::file(&p).unwrap();
        log.write(&AuditLine { request_id: "r1".into(), decision: "allow", ..Default::default() }).unwrap();
        log.write(&AuditLine { request_id: "r2".into(), decision: "block", ..Default::default() }).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["decision"], "block");
        assert_eq!(lines[0]["request_id"], "r1");
        let recent = log.recent();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0]["request_id"], "r2", "newest first");
    }

    #[test]
    fn the_recent_ring_is_bounded() {
        let log = AuditLog::file(&tempfile::tempdir().unwrap().path().join("a.log")).unwrap();
        for i in 0..RECENT_LINES + 5 {
            log.write(&AuditLine { request_id: format!("r{i}"), decision: "allow", ..Default::default() }).unwrap();
        }
        let recent = log.recent();
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent[0]["request_id"], format!("r{}", RECENT_LINES + 4));
        assert_eq!(recent[RECENT_LINES - 1]["request_id"], "r5");
        assert!(AuditLog::disabled().recent().is_empty());
    }
}
