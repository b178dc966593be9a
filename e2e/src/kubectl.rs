//! `kubectl` as a child process, its output read as JSON. `KUBECTL` names
//! another binary; the cluster is whatever `KUBECONFIG` (or kubectl's
//! default) names.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

fn bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// Runs kubectl; its stdout, or an error carrying the command and its stderr.
pub fn run(args: &[&str]) -> Result<String> {
    run_with_input(args, None)
}

/// Runs kubectl with `input` on its stdin (`kubectl apply -f -`).
pub fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {}", bin(), args.join(" ")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .with_context(|| format!("writing to kubectl {}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for kubectl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl ARGS -o json`, parsed.
pub fn json(args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = run(&all)?;
    serde_json::from_str(&text)
        .with_context(|| format!("parsing kubectl {} output", args.join(" ")))
}

/// `kubectl get ARGS -o json --ignore-not-found`: None when it does not exist.
pub fn get_opt(args: &[&str]) -> Result<Option<Value>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json", "--ignore-not-found"]);
    let text = run(&all)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("parsing kubectl get {} output", args.join(" "))
    })?))
}

/// The items of a list answer (`kubectl get pods -o json`).
pub fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// A string at a JSON pointer, "" when absent.
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Polls `check` every half second until it answers Some, or fails after
/// `timeout` naming `what` and the last error `check` returned.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => bail!(
                    "timed out after {}s waiting for {what} (last error: {e:#})",
                    timeout.as_secs()
                ),
                None => bail!("timed out after {}s waiting for {what}", timeout.as_secs()),
            }
        }
        sleep(Duration::from_millis(500));
    }
}
