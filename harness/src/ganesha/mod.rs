//! nfs-ganesha servers for the controller tests (which speak NFS from userspace).
//!
//! [`Ganesha`] serves NFSv4 on 127.0.0.1 in the host's namespace: NFSv4 needs no rpcbind, so
//! nothing listens beyond loopback. [`NetnsGanesha`] adds NFSv3, which needs rpcbind, and therefore
//! runs both daemons inside a fresh lo-only network namespace.
//!
//! Each server exports a fresh temp directory, is stopped by pid on drop, and removes its files.

mod config;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{io_err, Error, Result};
use crate::netns::Netns;
use crate::process::{tail, Daemon, POLL};
use crate::skip::find_program;
use config::Config;

/// The path clients mount (NFSv4 pseudo path, and the NFSv3 MOUNT path in the netns variant).
pub const PSEUDO_PATH: &str = "/export";

/// Generous: a start takes ~0.1 s, but the first one after installing took 3.2 s, and CI shares
/// two cores with builds.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fixed ports are fine inside a fresh namespace: nothing else lives there.
const NETNS_NFS_PORT: u16 = 2049;
const NETNS_MOUNT_PORT: u16 = 20048;
const RPCBIND_PORT: u16 = 111;

/// What ganesha logs once it serves requests.
const READY_LINE: &str = "NFS SERVER INITIALIZED";

/// Where ganesha's FSAL plugins live; the VFS one must be there (package nfs-ganesha-vfs).
pub fn plugins_dir() -> Result<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/ganesha"),
        PathBuf::from("/usr/lib64/ganesha"),
    ];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        candidates.extend(entries.flatten().map(|e| e.path().join("ganesha")));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("libfsalvfs.so").is_file())
        .ok_or_else(|| {
            Error::Missing("nfs-ganesha's VFS FSAL (libfsalvfs.so, package nfs-ganesha-vfs)".into())
        })
}

/// One server's files, all inside one temp directory removed on drop.
#[derive(Debug)]
struct Files {
    dir: TempDir,
    export: PathBuf,
    recovery: PathBuf,
    config: PathBuf,
    log: PathBuf,
    output: PathBuf,
    pid: PathBuf,
    /// Bind-mounted over `/run` for the daemons (see [`with_private_run`]).
    run: PathBuf,
}

impl Files {
    fn new() -> Result<Files> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-ganesha-")
            .tempdir()
            .map_err(io_err("create ganesha temp dir"))?;
        let p = dir.path().to_path_buf();
        let files = Files {
            export: p.join("export"),
            recovery: p.join("recovery"),
            config: p.join("ganesha.conf"),
            log: p.join("ganesha.log"),
            output: p.join("ganesha.out"),
            pid: p.join("ganesha.pid"),
            run: p.join("run"),
            dir,
        };
        for d in [
            &files.export,
            &files.recovery,
            &files.run,
            &files.run.join("rpcbind"),
        ] {
            fs::create_dir(d).map_err(io_err(format!("mkdir {}", d.display())))?;
        }
        Ok(files)
    }

    fn write_config(&self, config: &Config) -> Result<()> {
        fs::write(&self.config, config.render())
            .map_err(io_err(format!("write {}", self.config.display())))
    }

    /// `ganesha.nfsd` in the foreground with our config, log and pid file.
    fn ganesha_args(&self) -> Vec<&std::ffi::OsStr> {
        vec![
            "-F".as_ref(),
            "-f".as_ref(),
            self.config.as_os_str(),
            "-L".as_ref(),
            self.log.as_os_str(),
            "-p".as_ref(),
            self.pid.as_os_str(),
        ]
    }
}

/// Waits until `daemon` is ready per `probe` (and, if given, `ready_line` is in `log`); fails early
/// with the log's tail if the daemon exits.
fn wait_ready(
    daemon: &mut Daemon,
    log: &Path,
    ready_line: Option<&str>,
    mut probe: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = daemon.exit_status() {
            return Err(Error::Exited {
                name: daemon.name().to_string(),
                status,
                log: tail(log, 20),
            });
        }
        let logged = ready_line.is_none_or(|line| {
            fs::read_to_string(log)
                .map(|t| t.contains(line))
                .unwrap_or(false)
        });
        if logged && probe() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                name: daemon.name().to_string(),
                timeout: READY_TIMEOUT,
                log: tail(log, 20),
            });
        }
        sleep(POLL);
    }
}

/// Completes `base` (a command that runs `sh` in a new mount namespace: `unshare --mount ...` or
/// `ip netns exec`) so that `program` runs with `run_dir` bind-mounted over `/run`. ganesha and
/// rpcbind keep files there (`/run/ganesha`, `/run/rpcbind.sock`, rpcbind's lock): this keeps them
/// out of the host's `/run` and apart from other instances, while rpcbind and ganesha in one
/// namespace share the directory and so find each other's socket. Both `sh` and the wrappers exec,
/// so the child's pid is the daemon's.
fn with_private_run(mut base: Command, run_dir: &Path, program: &Path) -> Command {
    base.args(["-c", r#"mount --bind "$0" /run && exec "$@""#])
        .arg(run_dir)
        .arg(program);
    base
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before ganesha
/// binds it; [`Ganesha::start`] then retries with a new one.
fn free_loopback_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("local_addr of 127.0.0.1:0"))?
        .port())
}

/// nfs-ganesha serving NFSv4 (4.0, 4.1, 4.2) on 127.0.0.1 at a free port, exporting a fresh
/// directory. Stopped (SIGTERM, then SIGKILL) by pid on drop; its files are removed.
#[derive(Debug)]
pub struct Ganesha {
    // Field order is drop order: the server stops before its files are removed.
    daemon: Daemon,
    addr: SocketAddr,
    started_in: Duration,
    files: Files,
}

impl Ganesha {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Result<Ganesha> {
        let ganesha = find_program("ganesha.nfsd")
            .ok_or_else(|| Error::Missing("ganesha.nfsd (package nfs-ganesha)".into()))?;
        let unshare = find_program("unshare")
            .ok_or_else(|| Error::Missing("unshare (package util-linux)".into()))?;
        let plugins = plugins_dir()?;
        let mut last_error = None;
        // A port can be taken between our probe and ganesha's bind: try a few.
        for _ in 0..3 {
            let started = Instant::now();
            let files = Files::new()?;
            let port = free_loopback_port()?;
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            files.write_config(&Config {
                bind_addr: Some(addr.ip()),
                nfs_port: port,
                mount_port: None,
                plugins_dir: &plugins,
                export: &files.export,
                pseudo: PSEUDO_PATH,
                recovery: &files.recovery,
            })?;
            let mut unshare = Command::new(&unshare);
            unshare.args(["--mount", "--propagation", "slave", "sh"]);
            let mut daemon = Daemon::spawn(
                "ganesha.nfsd",
                with_private_run(unshare, &files.run, &ganesha).args(files.ganesha_args()),
                &files.output,
            )?;
            match wait_ready(&mut daemon, &files.log, Some(READY_LINE), || accepts(addr)) {
                Ok(()) => {
                    return Ok(Ganesha {
                        daemon,
                        addr,
                        started_in: started.elapsed(),
                        files,
                    })
                }
                Err(e @ Error::Exited { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Missing("ganesha never started".into())))
    }

    /// The exported directory on the host's disk: write here, read over NFS (and vice versa).
    pub fn export_dir(&self) -> &Path {
        &self.files.export
    }

    /// Where the server listens: 127.0.0.1 and a port picked for this instance.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The NFSv4 path of the export ([`PSEUDO_PATH`]).
    pub fn pseudo_path(&self) -> &str {
        PSEUDO_PATH
    }

    /// An nfs-rs style URL for the export, e.g. `version` = `"4.1"`.
    pub fn url(&self, version: &str) -> String {
        format!(
            "nfs://{}{}?version={version}&nfsport={}",
            self.addr,
            PSEUDO_PATH,
            self.addr.port()
        )
    }

    /// The server's pid (for checks such as "listens on loopback only").
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// How long the start took until the server accepted connections.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The server's log so far, for test failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.files.log).unwrap_or_default()
    }

    /// Stops the server now (drop does the same) and returns how long the stop took.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.daemon.stop();
        t.elapsed()
    }
}

/// rpcbind plus nfs-ganesha serving NFSv3 and NFSv4 on port 2049 (MOUNT on 20048), both inside a
/// fresh network namespace whose only interface is `lo`. Reach it from inside the namespace:
/// [`Netns::in_netns`] for code in this process, [`Netns::command`] for programs.
///
/// Both daemons see one private `/run` (see [`with_private_run`]), so rpcbind's lock and socket
/// never collide with another instance or the host, and ganesha still finds rpcbind's socket.
#[derive(Debug)]
pub struct NetnsGanesha {
    // Drop order: ganesha, rpcbind, the namespace, then the files.
    ganesha: Daemon,
    rpcbind: Daemon,
    netns: Netns,
    started_in: Duration,
    files: Files,
}

impl NetnsGanesha {
    /// Creates the namespace, starts rpcbind and ganesha in it, and waits until both serve.
    pub fn start() -> Result<NetnsGanesha> {
        let ganesha = find_program("ganesha.nfsd")
            .ok_or_else(|| Error::Missing("ganesha.nfsd (package nfs-ganesha)".into()))?;
        let rpcbind = find_program("rpcbind")
            .ok_or_else(|| Error::Missing("rpcbind (package rpcbind)".into()))?;
        let plugins = plugins_dir()?;
        let started = Instant::now();
        let files = Files::new()?;
        files.write_config(&Config {
            bind_addr: None,
            nfs_port: NETNS_NFS_PORT,
            mount_port: Some(NETNS_MOUNT_PORT),
            plugins_dir: &plugins,
            export: &files.export,
            pseudo: PSEUDO_PATH,
            recovery: &files.recovery,
        })?;
        let netns = Netns::new()?;
        let rpcbind_log = files.dir.path().join("rpcbind.out");
        let mut rpcbind = Daemon::spawn(
            "rpcbind",
            with_private_run(netns.command("sh"), &files.run, &rpcbind).arg("-f"),
            &rpcbind_log,
        )?;
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        wait_ready(&mut rpcbind, &rpcbind_log, None, || {
            netns
                .in_netns(|| accepts(local(RPCBIND_PORT)))
                .unwrap_or(false)
        })?;
        let mut daemon = Daemon::spawn(
            "ganesha.nfsd",
            with_private_run(netns.command("sh"), &files.run, &ganesha).args(files.ganesha_args()),
            &files.output,
        )?;
        wait_ready(&mut daemon, &files.log, Some(READY_LINE), || {
            netns
                .in_netns(|| accepts(local(NETNS_NFS_PORT)))
                .unwrap_or(false)
        })?;
        Ok(NetnsGanesha {
            ganesha: daemon,
            rpcbind,
            netns,
            started_in: started.elapsed(),
            files,
        })
    }

    /// The namespace both daemons run in; clients must run there too.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The exported directory on the host's disk.
    pub fn export_dir(&self) -> &Path {
        &self.files.export
    }

    /// NFS address inside the namespace: 127.0.0.1:2049.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), NETNS_NFS_PORT)
    }

    /// The MOUNT (NFSv3) port inside the namespace.
    pub fn mount_port(&self) -> u16 {
        NETNS_MOUNT_PORT
    }

    /// The export's path for NFSv4 and for NFSv3 MOUNT ([`PSEUDO_PATH`]).
    pub fn pseudo_path(&self) -> &str {
        PSEUDO_PATH
    }

    /// An nfs-rs style URL (valid inside the namespace); ports come from rpcbind.
    pub fn url(&self, version: &str) -> String {
        format!("nfs://127.0.0.1{PSEUDO_PATH}?version={version}")
    }

    /// Pids of (ganesha, rpcbind).
    pub fn pids(&self) -> (u32, u32) {
        (self.ganesha.pid(), self.rpcbind.pid())
    }

    /// How long creating the namespace and starting both daemons took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// ganesha's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.files.log).unwrap_or_default()
    }
}
