//! The driver's memory and CPU time, read from /proc/<pid>.

use std::io;

use serde::Serialize;

/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every
/// mainstream architecture regardless of the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// What the driver used during one measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcUsage {
    pub rss_max_kib: u64,
    pub rss_end_kib: u64,
    pub cpu_seconds: f64,
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&status).ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// User plus system CPU seconds so far, the process's own and that of the
/// children it has waited for (a driver that runs `mount` and `umount` pays
/// for them).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu(&stat).ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

pub fn parse_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime and stime are fields 14 and 15, cutime and cstime (waited-for
/// children) 16 and 17; the command name (field 2) may hold spaces and
/// parentheses, so count from the last `)`.
pub fn parse_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Option<u64> {
        // The children's fields are signed in the kernel's format.
        let v: i64 = fields.get(i)?.parse().ok()?;
        Some(v.max(0).unsigned_abs())
    };
    let total = ticks(11)? + ticks(12)? + ticks(13)? + ticks(14)?;
    Some(total as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t    5120 kB\nVmSwap: 0 kB\n"),
            Some(5120)
        );
        assert_eq!(parse_rss("Name: x\n"), None);
        let stat = "42 (cairn csi) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu(stat), Some(3.0));
        // Children it waited for (mount, umount) count too.
        let stat = "42 (hostpath) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 70 30 20 0 9 0";
        assert_eq!(parse_cpu(stat), Some(4.0));
        let stat = "42 (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 -1 0 20 0 9 0";
        assert_eq!(parse_cpu(stat), Some(3.0));
        assert_eq!(
            parse_cpu("42 (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50"),
            None
        );
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
