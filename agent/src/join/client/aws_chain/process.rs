//! `credential_process`: a program the profile names prints credentials as
//! JSON (`Version: 1`, `AccessKeyId`, `SecretAccessKey`, optional
//! `SessionToken` and `Expiration`). It is run without a shell, its command
//! line split as botocore splits it (POSIX shell words: blanks separate,
//! quotes group, backslash escapes), with no stdin, at most [`MAX_OUTPUT`]
//! bytes of stdout read, and killed after [`TIMEOUT`]. Its stderr goes to
//! the agent's stderr as the SDKs let it; this module never logs it nor puts
//! it in an error, and errors name only the program, not its arguments
//! (which may hold secrets).

use super::{json, Fetched};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest stdout read.
pub const MAX_OUTPUT: u64 = 64 * 1024;
/// Deadline of one run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Splits `command` into words.
pub fn split(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(x) => cur.push(x),
                    None => return Err("trailing backslash".into()),
                }
            }
            x => {
                in_word = true;
                cur.push(x);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Runs `command` and reads its credentials.
pub async fn run(command: &str, timeout: Duration) -> Result<Fetched, String> {
    let argv = split(command).map_err(|e| format!("credential_process: {e}"))?;
    let Some(program) = argv.first() else { return Err("credential_process is empty".into()) };
    let what = format!("credential_process {program:?}");
    let mut child = tokio::process::Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| format!("{what}: no stdout"))?;
    let work = async {
        let mut out = Vec::new();
        (&mut stdout).take(MAX_OUTPUT + 1).read_to_end(&mut out).await.map_err(|e| format!("{what}: reading its output: {e}"))?;
        if out.len() as u64 > MAX_OUTPUT {
            return Err(format!("{what}: printed more than {MAX_OUTPUT} bytes"));
        }
        let status = child.wait().await.map_err(|e| format!("{what}: {e}"))?;
        Ok((status, out))
    };
    let (status, out) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("{what}: did not finish within {} s (killed)", timeout.as_secs())),
    };
    if !status.success() {
        return Err(format!("{what}: failed ({status}; its stderr is above, not repeated here)"));
    }
    let (f, v) = json::parse(&out, "SessionToken").map_err(|e| format!("{what}: {e}"))?;
    if v.get("Version").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(format!("{what}: the output must carry \"Version\": 1"));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_split_as_the_shell_would() {
        assert_eq!(split("  a b\t'c d' \"e \\\"f\\\" \\n\" g\\ h ''").unwrap(), ["a", "b", "c d", "e \"f\" \\n", "g h", ""]);
        assert_eq!(split("aws configure export-credentials --profile p --format process").unwrap().len(), 7);
        assert!(split("a 'b").is_err() && split("a \"b").is_err() && split("a\\").is_err());
        assert!(split("   ").unwrap().is_empty());
    }

    #[tokio::test]
    async fn version_1_output_is_read_with_its_expiration() {
        let out = r#"{"Version":1,"AccessKeyId":"AKIDP","SecretAccessKey":"ps","SessionToken":"pt","Expiration":"2023-11-14T22:13:20Z"}"#;
        let f = run(&format!("printf '%s' '{out}'"), TIMEOUT).await.unwrap();
        assert_eq!((f.credentials.access_key_id(), f.expires_at), ("AKIDP", Some(1_700_000_000)));
        let e = run("printf '{\"Version\":2,\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"b\"}'", TIMEOUT).await.unwrap_err();
        assert!(e.contains("Version"), "{e}");
    }

    #[tokio::test]
    async fn failures_name_the_program_never_its_arguments_or_stderr() {
        let e = run("sh -c 'echo leaked-secret >&2; exit 3' hidden-arg", TIMEOUT).await.unwrap_err();
        assert!(e.contains("\"sh\"") && e.contains("failed") && !e.contains("leaked-secret") && !e.contains("hidden-arg"), "{e}");
        let e = run("/nonexistent/helper --token x", TIMEOUT).await.unwrap_err();
        assert!(e.contains("cannot start") && !e.contains("--token"), "{e}");
    }

    #[tokio::test]
    async fn runs_are_bounded_in_time_and_output() {
        let e = run("sleep 30", Duration::from_millis(300)).await.unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let e = run("head -c 200000 /dev/zero", TIMEOUT).await.unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
