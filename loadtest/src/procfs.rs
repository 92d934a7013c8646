//! What a server process costs, read from `/proc`: its resident memory and
//! the CPU time it (and every process it started) has used.
//!
//! The load generators report a server's cost per session or per token next
//! to its latencies, so that Skald, the baseline relay and other gateways
//! (LiteLLM, whose proxy may run worker processes) are compared on the same
//! terms: a process and its descendants, measured before and after a load.

use std::collections::{BTreeMap, BTreeSet};

/// Why a process could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not have the expected format")]
    Format { path: String },
}

fn read(path: String) -> Result<String, ProcError> {
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// VmRSS of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let status = read(path.clone())?;
    parse_vm_rss(&status).ok_or(ProcError::Format { path })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses itself): field 3 (state) is index 0.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().collect())
}

/// (parent pid, user + system CPU ticks) of one `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let fields = stat_fields(stat)?;
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `pid` and every live descendant of it.
pub fn process_tree(pid: u32) -> Result<BTreeSet<u32>, ProcError> {
    let entries = std::fs::read_dir("/proc").map_err(|source| ProcError::Read {
        path: "/proc".into(),
        source,
    })?;
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end while we look: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if let Some((parent, _)) = parse_stat(&stat) {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut tree = BTreeSet::from([pid]);
    let mut todo = vec![pid];
    while let Some(next) = todo.pop() {
        for &child in children.get(&next).into_iter().flatten() {
            if tree.insert(child) {
                todo.push(child);
            }
        }
    }
    Ok(tree)
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// One reading of a server: CPU seconds so far and resident memory, summed
/// over the process and its live descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// Reads `pid` and its descendants; the root must be readable, a
/// descendant that ends meanwhile is left out.
pub fn read_tree(pid: u32) -> Result<Reading, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let (_, root_ticks) = parse_stat(&read(path.clone())?).ok_or(ProcError::Format { path })?;
    let mut reading = Reading {
        cpu_s: 0.0,
        rss_kib: rss_kib(pid)?,
    };
    let mut ticks = root_ticks;
    for member in process_tree(pid)?.into_iter().filter(|&p| p != pid) {
        let stat = std::fs::read_to_string(format!("/proc/{member}/stat")).ok();
        ticks += stat.as_deref().and_then(parse_stat).map_or(0, |(_, t)| t);
        reading.rss_kib += rss_kib(member).unwrap_or(0);
    }
    reading.cpu_s = ticks as f64 / ticks_per_second();
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_strange_command_name() {
        let stat =
            "4242 (we ird) (name)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(stat), Some((17, 325)));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tskald\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12_345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn reads_this_process_and_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let tree = process_tree(me).unwrap();
        let found = tree.contains(&child.id());
        let reading = read_tree(me).unwrap();
        let alone = rss_kib(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(tree.contains(&me));
        assert!(found, "the child is part of the tree: {tree:?}");
        assert!(reading.rss_kib > alone, "the child's memory is counted");
        assert!(reading.cpu_s >= 0.0);
        assert!(matches!(read_tree(u32::MAX), Err(ProcError::Read { .. })));
    }
}
