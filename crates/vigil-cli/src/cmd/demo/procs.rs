//! The demo's processes: each started with its output in `logs/NAME.log` and its PID in
//! `pids/NAME`, and stopped by that PID (SIGTERM, SIGKILL after 5 s), newest first,
//! when the demo ends, fails or is interrupted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Set once SIGINT or SIGTERM arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C (or SIGTERM) was received: the demo stops what it started and exits 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// Watches SIGINT and SIGTERM on a thread of its own, so the demo's waits can notice
/// them and still stop its processes (the default action would kill the demo and leave
/// them running).
pub(super) fn watch_signals() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    // Handlers are installed here, before the demo starts anything.
    let (mut int, mut term) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    Ok(())
}

/// `Err(Interrupted)` once a signal arrived.
pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Sleeps `d` unless interrupted.
pub(super) fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    check_interrupted()
}

/// The processes the demo started.
pub(super) struct Processes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
    swtpms: Vec<(String, vigil_swtpm::Swtpm)>,
}

impl Processes {
    /// Nothing started yet; logs and PID files go under `dir`.
    pub(super) fn new(dir: &Path) -> Result<Self> {
        for sub in ["logs", "pids"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            children: Vec::new(),
            swtpms: Vec::new(),
        })
    }

    /// The log file of `name`.
    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Starts `cmd` as `name`, its output in its log; returns the PID.
    pub(super) fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<u32> {
        let log = std::fs::File::create(self.log(name))
            .with_context(|| format!("cannot create {}", self.log(name).display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        self.record_pid(name, pid);
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    /// Takes charge of a swtpm named `name` (swtpms are stopped last).
    pub(super) fn adopt_swtpm(&mut self, name: &str, swtpm: vigil_swtpm::Swtpm) {
        self.record_pid(name, swtpm.pid());
        self.swtpms.push((name.to_owned(), swtpm));
    }

    fn record_pid(&self, name: &str, pid: u32) {
        // Only for the clean-up of a run that was killed with SIGKILL.
        let _ = std::fs::write(self.dir.join("pids").join(name), pid.to_string());
    }

    /// An error naming the first process that exited on its own.
    pub(super) fn check_running(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("{name} exited ({status})");
            }
        }
        Ok(())
    }

    /// Stops everything, newest first, calling `report(name, pid)` for each.
    pub(super) fn stop_all(&mut self, mut report: impl FnMut(&str, u32)) {
        while let Some((name, mut child)) = self.children.pop() {
            report(&name, child.id());
            stop(&mut child);
        }
        while let Some((name, mut swtpm)) = self.swtpms.pop() {
            report(&name, swtpm.pid());
            swtpm.stop();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("pids"));
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all(|_, _| {});
    }
}

/// SIGTERM to exactly this PID (through kill(1): std only sends SIGKILL), so the
/// services shut down cleanly; SIGKILL if it is still there after 5 s.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops what a previous run killed with SIGKILL left behind, by the PIDs it recorded,
/// if they still run the program of that name.
pub(super) fn stop_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&name) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// The last `n` lines of a file.
pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
