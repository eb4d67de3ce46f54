//! Every shell example of the README (and of `docs/*.md`) runs, as written, in the
//! test suite: a renamed flag, a missing install line or a setting an example
//! forgot fails here.
//!
//! # The conventions an example must follow
//!
//! - Shell examples are fenced as ```` ```sh ````; a ```` ```bash ````, `shell`,
//!   `console` or `zsh` fence fails the test (it would escape it).
//! - A block that cannot run here (it builds for minutes, needs root, systemd, a real
//!   Ollama, or the network) is preceded, on the nearest non-blank line above its
//!   fence, by `<!-- not run: REASON -->`, with a reason. Each skip is visible in the
//!   README's source and listed by this test; nothing else is skipped.
//! - Each block runs on its own in `bash -e -o pipefail` (so every command must
//!   succeed; a line whose failure is the point must say so, e.g. `|| true`), from
//!   an empty working directory, with `foreman` on `PATH` as the binary this test
//!   run built and `python3`/`pip` from the project's `.venv` (made by
//!   `scripts/setup-python.sh`, with the official `ollama` and `openai` clients).
//! - `curl` fails on an error status: the run's `~/.curlrc` says `--fail-with-body`,
//!   so an example that hits a renamed route fails here even though a plain `curl`
//!   would exit 0. An example whose error answer is the point ends in `|| true` and
//!   says the status in a comment.
//! - Addresses are written as a user has them: foreman at `127.0.0.1:11435`, its
//!   default, a real Ollama at `127.0.0.1:11434`. The whole run happens in a network
//!   namespace of its own (`unshare --net`, root; it fails the test where that is
//!   refused), so those ports are free and private whatever runs on the machine, and
//!   nothing reaches the Internet (so no example may need it: `pip install` lines
//!   pass only because `.venv` already holds what they name).
//!   `scripts/setup-readme.sh` installs `curl`, `unshare` and `ip`.
//! - Before each block a foreman runs as the README's first command starts it
//!   (`foreman serve --simulate`, no `FOREMAN_*` variable), on a database in the
//!   working directory that lives for the whole run.
//! - A line that starts foreman (`foreman serve ...`, optionally after `VAR=value`
//!   assignments, as a user types it in another terminal) replaces the running
//!   foreman for the rest of its block: it is started in the background with the
//!   block's variables, the next line runs once it answers `/healthz` at the address
//!   its banner names, and it must do so within 60 s. After the block, the standard
//!   foreman comes back.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced shell example.
#[derive(Debug)]
struct Block {
    /// `README.md:12`: the fence's file and line.
    place: String,
    code: String,
    /// Why it is not run, from its `<!-- not run: ... -->` comment.
    not_run: Option<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The shell blocks of one markdown file.
fn blocks_of(path: &Path, name: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at].trim_start();
        let Some(info) = line.strip_prefix("```") else {
            at += 1;
            continue;
        };
        let tag = info.split_whitespace().next().unwrap_or("");
        let end = (at + 1..lines.len())
            .find(|&i| lines[i].trim_start().starts_with("```"))
            .unwrap_or_else(|| panic!("{name}:{}: a fence that never closes", at + 1));
        assert!(
            !matches!(tag, "bash" | "shell" | "console" | "zsh" | "shell-session"),
            "{name}:{}: fence shell examples as ```sh so that the README test runs them",
            at + 1
        );
        if tag == "sh" {
            let comment = lines[..at]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim());
            let not_run = comment
                .and_then(|c| c.strip_prefix("<!-- not run:"))
                .map(|c| c.trim_end_matches("-->").trim().to_string());
            if let Some(reason) = &not_run {
                assert!(
                    !reason.is_empty(),
                    "{name}:{}: a not-run example needs its reason",
                    at + 1
                );
            }
            blocks.push(Block {
                place: format!("{name}:{}", at + 1),
                code: lines[at + 1..end].join("\n"),
                not_run,
            });
        }
        at = end + 1;
    }
    blocks
}

/// The README's blocks, then those of `docs/*.md` in name order.
fn all_blocks() -> Vec<Block> {
    let root = repo();
    let mut blocks = blocks_of(&root.join("README.md"), "README.md");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    for doc in docs {
        let name = doc.strip_prefix(&root).unwrap().display().to_string();
        blocks.extend(blocks_of(&doc, &name));
    }
    blocks
}

/// Whether `line` starts foreman: `foreman serve`, maybe after `VAR=value` words
/// (values quoted with '...' or "..." may hold spaces).
fn starts_foreman(line: &str) -> bool {
    let mut rest = line.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("foreman serve") {
            return after.chars().next().is_none_or(char::is_whitespace);
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 || !rest[name_len..].starts_with('=') {
            return false;
        }
        let mut value = rest[name_len + 1..].chars();
        let mut quote = None;
        let mut used = name_len + 1;
        for c in value.by_ref() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c.is_whitespace() => break,
                None => {}
            }
            used += c.len_utf8();
        }
        rest = rest[used..].trim_start();
    }
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The helpers every block can call: `__server LINE` starts foreman as LINE says
/// (replacing the one running) and waits until it answers; `__stop` stops it.
const HELPERS: &str = r#"
__alive() {
  kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}
__stop() {
  local pid
  pid=$(cat "$RUN/server.pid" 2>/dev/null) || return 0
  rm -f "$RUN/server.pid"
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  # The whole process group: foreman outlives the shell that started it while it
  # shuts down, and still holds its port and writes its last lines.
  for _ in $(seq 600); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "readme: foreman did not stop within 60 s after SIGTERM" >&2
  kill -KILL -- "-$pid" 2>/dev/null
  return 1
}
__server() {
  __stop
  # A log of its own for each start (server.log names the latest), so a foreman
  # still writing its last lines cannot write into the next one's.
  local log pid url=""
  log=$(mktemp "$RUN/server-XXXX.log")
  ln -sf "$log" "$RUN/server.log"
  set -m
  eval "$1" >"$log" 2>&1 </dev/null &
  pid=$!
  set +m
  echo "$pid" >"$RUN/server.pid"
  for _ in $(seq 600); do
    url=$(grep -a -o -m1 'listening on http://[][0-9A-Za-z.:-]*' "$log" | sed 's/^listening on //') || true
    if [ -n "$url" ] && curl -s -o /dev/null "$url/healthz"; then
      echo "readme: foreman started as: $1 (at $url)" >&2
      return 0
    fi
    if ! __alive "$pid"; then
      echo "readme: this line did not start foreman: $1" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "readme: foreman did not answer within 60 s: $1" >&2
  cat "$log" >&2
  return 1
}
export -f __alive __stop __server
"#;

/// The first command of the README, as the test runs it between blocks.
const STANDARD: &str = "foreman serve --simulate";

#[test]
fn every_shell_example_in_the_readme_runs_as_written() {
    let blocks = all_blocks();
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first = readme
        .split("```sh\n")
        .nth(1)
        .expect("the README opens with a shell block");
    assert!(
        first.starts_with("cargo run --release -p foreman -- serve --simulate")
            && first
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("scripts/test")),
        "the README starts with its two commands: foreman with the simulator, then scripts/test"
    );
    let python = root.join(".venv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh",
        python.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let (run, work, bin, home) = (
        dir.path().join("run"),
        dir.path().join("work"),
        dir.path().join("bin"),
        dir.path().join("home"),
    );
    for d in [&run, &work, &bin, &home] {
        std::fs::create_dir(d).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_foreman"), bin.join("foreman")).unwrap();
    std::fs::write(home.join(".curlrc"), "--fail-with-body\n").unwrap();

    let mut driver = String::from(
        "set -u\ncommand -v ip >/dev/null && command -v curl >/dev/null || exit 89\n\
         ip link set lo up || exit 90\n",
    );
    driver.push_str(HELPERS);
    // Whatever way the run ends, no foreman outlives it.
    driver.push_str("trap __stop EXIT\n");
    driver.push_str(&format!(
        "__server {} || exit 91\n",
        single_quoted(STANDARD)
    ));
    let mut run_count = 0;
    for (index, block) in blocks.iter().enumerate() {
        if block.not_run.is_some() {
            continue;
        }
        run_count += 1;
        let mut script = String::new();
        let mut starts_own = false;
        for line in block.code.lines() {
            if starts_foreman(line) {
                starts_own = true;
                script.push_str(&format!("__server {}\n", single_quoted(line.trim())));
            } else {
                script.push_str(line);
                script.push('\n');
            }
        }
        let file = run.join(format!("block-{index}.sh"));
        std::fs::write(&file, script).unwrap();
        driver.push_str(&format!(
            "(cd {work} && timeout 300 bash -e -o pipefail {file}) >{out} 2>&1\n\
             echo \"{index} $?\" >>\"$RUN/results\"\n",
            work = single_quoted(work.to_str().unwrap()),
            file = single_quoted(file.to_str().unwrap()),
            out = single_quoted(run.join(format!("out-{index}")).to_str().unwrap()),
        ));
        if starts_own {
            driver.push_str(&format!(
                "__server {} || exit 92\n",
                single_quoted(STANDARD)
            ));
        }
    }
    driver.push_str("__stop\n");
    std::fs::write(run.join("driver.sh"), driver).unwrap();

    let path = format!(
        "{}:{}:{}",
        bin.display(),
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("unshare");
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("FOREMAN_")
            || name_text.starts_with("OLLAMA_")
            || matches!(
                name_text.as_ref(),
                "VIRTUAL_ENV" | "STATE_DIRECTORY" | "CREDENTIALS_DIRECTORY" | "XDG_CONFIG_HOME"
            )
        {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["--net", "--", "bash"])
        .arg(run.join("driver.sh"))
        .current_dir(&work)
        .env("PATH", path)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("CURL_HOME", &home)
        .env("NO_COLOR", "1")
        .env("RUN", &run)
        .output()
        .unwrap_or_else(|e| panic!("unshare cannot run ({e}): run scripts/setup-readme.sh"));
    let driver_said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README run stopped ({:?}): exit 89 means `ip` or `curl` is missing (run \
         scripts/setup-readme.sh), 90 no network namespace (unshare needs root), 91/92 that \
         `{STANDARD}` did not start\n{driver_said}\n{}",
        output.status,
        std::fs::read_to_string(run.join("server.log")).unwrap_or_default()
    );

    let results = std::fs::read_to_string(run.join("results")).unwrap_or_default();
    let mut failures = Vec::new();
    let mut reported = 0;
    for line in results.lines() {
        let (index, code) = line.split_once(' ').unwrap();
        let index: usize = index.parse().unwrap();
        reported += 1;
        if code != "0" {
            let block = &blocks[index];
            let out = std::fs::read_to_string(run.join(format!("out-{index}"))).unwrap();
            failures.push(format!(
                "--- {} exited {code}:\n{}\n--- its output:\n{out}",
                block.place, block.code
            ));
        }
    }
    for block in blocks.iter().filter(|b| b.not_run.is_some()) {
        eprintln!(
            "not run: {} ({})",
            block.place,
            block.not_run.as_deref().unwrap()
        );
    }
    assert_eq!(reported, run_count, "every example ran\n{driver_said}");
    assert!(
        run_count >= 5,
        "only {run_count} examples run: most of the README must be tested"
    );
    assert!(
        failures.is_empty(),
        "{} of {run_count} README examples failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_line_that_starts_foreman_is_recognised_after_variables() {
    assert!(starts_foreman("foreman serve --simulate"));
    assert!(starts_foreman("  foreman serve"));
    assert!(starts_foreman(
        "FOREMAN_TARGETS='http://a:1,name=a http://b:1,name=b' FOREMAN_TOKEN=x foreman serve"
    ));
    assert!(starts_foreman(
        "FOREMAN_WEBHOOK_SECRET=\"whsec_$(head -c 32 /dev/urandom | base64)\" foreman serve --simulate"
    ));
    assert!(!starts_foreman("foreman jobs list"));
    assert!(!starts_foreman("foreman servex"));
    assert!(!starts_foreman("echo foreman serve"));
    assert!(!starts_foreman("# foreman serve"));
}
