//! Which addresses a process listens on, read from `/proc`. Tests use it to prove a server is
//! reachable on loopback only (the harness's hard rule), not merely configured that way.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{io_err, Result};

/// Local addresses of the TCP sockets in LISTEN state and the bound UDP sockets that process
/// `pid` holds open, seen from its own network namespace.
pub fn listening(pid: u32) -> Result<Vec<SocketAddr>> {
    let mut by_inode = HashMap::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = fs::read_to_string(&path).map_err(io_err(format!("read {path}")))?;
        let tcp = table.starts_with("tcp");
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || (tcp && f[3] != "0A") {
                continue;
            }
            if let Some(addr) = parse_addr(f[1]) {
                by_inode.insert(f[9].to_string(), addr);
            }
        }
    }
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for fd in fs::read_dir(&dir)
        .map_err(io_err(format!("read {dir}")))?
        .flatten()
    {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            if let Some(addr) = by_inode.get(inode) {
                out.push(*addr);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `0100007F:0801` (little-endian words, as the kernel prints them) into an address.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, word) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                word.copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_address_notation() {
        assert_eq!(
            parse_addr("0100007F:0801"),
            Some("127.0.0.1:2049".parse().unwrap())
        );
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0801"),
            Some("[::ffff:127.0.0.1]:2049".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:006F"),
            Some("[::1]:111".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000:006F"),
            Some("0.0.0.0:111".parse().unwrap())
        );
    }

    #[test]
    fn loopback_includes_v4_mapped() {
        assert!(is_loopback(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(is_loopback(&"[::1]:1".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:1".parse().unwrap()));
        assert!(!is_loopback(&"[::]:1".parse().unwrap()));
    }
}
