//! A host-built binary for the guest test to run: proves that binaries from `target/` run inside
//! the guest unchanged, and reports the kernel they run on (the guest's, not the host's).

fn main() -> std::process::ExitCode {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("cairn-harness-probe running on kernel {}", release.trim());
    std::process::ExitCode::SUCCESS
}
