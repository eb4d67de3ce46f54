//! The service files as a user installs them: `packaging/foreman.service` passes
//! `systemd-analyze verify` (which `scripts/setup-systemd.sh` installs; a missing
//! tool fails this test), its stop timeout leaves room for the shutdown grace, and
//! `scripts/install.sh --prefix` lays down every file without touching a settings
//! file that is already there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/foreman.service")).unwrap()
}

/// The value of `Key=` in the unit (the last one, as systemd reads it).
fn directive(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// `systemd-analyze verify` on `unit` (a file named foreman.service); its exit code
/// and everything it said.
fn verify(unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze cannot run ({e}): install it with scripts/setup-systemd.sh")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// The unit, as installed but with `ExecStart` naming the binary this test run
/// built (verify checks that the program exists), passes `systemd-analyze verify`
/// without a warning; a unit with a misspelt value does not, so the check is real.
#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    let unit = unit_text();
    assert_eq!(
        directive(&unit, "ExecStart").as_deref(),
        Some("/usr/local/bin/foreman serve")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreman.service");
    let built = unit.replace(
        "ExecStart=/usr/local/bin/foreman ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_foreman")),
    );
    std::fs::write(&path, &built).unwrap();
    let (ok, said) = verify(&path);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    std::fs::write(&path, built.replace("ProtectHome=yes", "ProtectHome=maybe")).unwrap();
    let (_, said) = verify(&path);
    assert!(
        said.contains("ProtectHome") || said.contains("protect home"),
        "{said}"
    );
}

/// What the unit promises: the user, the state directory the server defaults its
/// data to, the settings file, a stop timeout above the shutdown grace (so systemd
/// does not SIGKILL foreman while running jobs still have their grace), and the
/// hardening options, with no capability at all.
#[test]
fn the_service_unit_runs_unprivileged_with_room_to_stop() {
    let unit = unit_text();
    for (key, value) in [
        ("User", "foreman"),
        ("StateDirectory", "foreman"),
        ("EnvironmentFile", "-/etc/foreman/foreman.env"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(directive(&unit, key).as_deref(), Some(value), "{key}");
    }
    let stop = directive(&unit, "TimeoutStopSec").expect("TimeoutStopSec");
    let stop = Duration::from_secs(stop.parse().expect("TimeoutStopSec in seconds"));
    let grace =
        foreman::config::Config::for_upstream("http://127.0.0.1:11434", "x.db").shutdown_grace;
    assert!(
        stop >= grace + Duration::from_secs(10),
        "TimeoutStopSec {stop:?} must leave room beyond FOREMAN_SHUTDOWN_GRACE {grace:?}"
    );
}

/// `install.sh --prefix DIR --binary PATH` puts the binary, the unit, the settings,
/// the completions and the man page under DIR; a second run keeps the settings a
/// user edited. The settings file sets only variables `foreman serve` knows.
#[test]
fn install_sh_with_a_prefix_lays_down_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let install = || {
        let output = Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg("--prefix")
            .arg(&root)
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_foreman"))
            .output()
            .unwrap();
        assert!(output.status.success(), "install.sh: {output:?}");
    };
    install();
    let binary = root.join("usr/local/bin/foreman");
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("foreman "),
        "{version:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system/foreman.service")).unwrap(),
        unit_text()
    );
    for generated in [
        "usr/local/share/bash-completion/completions/foreman",
        "usr/local/share/zsh/site-functions/_foreman",
        "usr/local/share/fish/vendor_completions.d/foreman.fish",
        "usr/local/share/man/man1/foreman.1",
    ] {
        let text = std::fs::read_to_string(root.join(generated)).unwrap();
        assert!(text.contains("foreman"), "{generated}: {text}");
    }
    let settings = root.join("etc/foreman/foreman.env");
    let shipped = std::fs::read_to_string(&settings).unwrap();
    let help = Command::new(&binary)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in shipped.lines().filter(|l| l.starts_with("FOREMAN_")) {
        let name = line.split('=').next().unwrap();
        assert!(
            help.contains(&format!("env: {name}=")),
            "{name} is not a setting of foreman serve"
        );
    }
    std::fs::write(&settings, "FOREMAN_ADDR=0.0.0.0:11434\n").unwrap();
    install();
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "FOREMAN_ADDR=0.0.0.0:11434\n",
        "a second install keeps the settings"
    );
}

/// The shipped settings file starts foreman as it is: its values (not only its
/// names) are valid. foreman runs in a network namespace of its own, so the
/// file's address (`127.0.0.1:11435`) is free whatever runs on the machine; the
/// banner shows that the settings were accepted and the address bound.
#[tokio::test]
async fn the_shipped_settings_start_foreman() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let settings = repo().join("packaging/foreman.env");
    let script = format!(
        "ip link set lo up && cd {dir} && set -a && . {settings} && set +a && exec {foreman} serve",
        dir = dir.path().display(),
        settings = settings.display(),
        foreman = env!("CARGO_BIN_EXE_foreman"),
    );
    let mut command = tokio::process::Command::new("unshare");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FOREMAN_") {
            command.env_remove(name);
        }
    }
    let mut foreman = command
        .args(["--net", "--", "bash", "-c", &script])
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("unshare runs (scripts/setup-readme.sh)");
    let mut stdout = BufReader::new(foreman.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("the banner arrives")
        .unwrap();
    let Some(banner) = banner else {
        let output = foreman.wait_with_output().await.unwrap();
        panic!(
            "foreman refused the shipped settings: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    assert!(
        banner.contains("listening on http://127.0.0.1:11435"),
        "{banner}"
    );
    foreman.kill().await.unwrap();
}
