//! `sigil completion SHELL` and `sigil man --out-dir DIR`: shell completions and
//! man pages generated from the clap definition itself, so they can never list a
//! command or flag the binaries do not have (packaging runs these at build time;
//! see scripts/package-deb.sh).
//!
//! Both commands also serve the `sigil-agent` binary (`--program sigil-agent`),
//! whose CLI is flat (`sigil-agent --config FILE`) and keeps no room for
//! subcommands: its definition comes from `sigil_agent::cli::command()`, and the
//! generators stay out of the agent binary.
//!
//! Man page sections: `sigil` and its subcommands are user commands (section 1:
//! `sigil.1`, `sigil-token.1`, `sigil-token-create.1`, ...); the `sigil-agent`
//! binary is a daemon (section 8: `sigil-agent.8`), which also keeps it apart from
//! `sigil-agent.1`, the page of the `sigil agent` subcommand.

use clap::{Args, CommandFactory, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The programs whose CLI definitions this module renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Program {
    /// The `sigil` command line (broker, agent, admin commands).
    Sigil,
    /// The standalone `sigil-agent` binary.
    SigilAgent,
}

impl Program {
    /// The binary name the generated files complete and document.
    pub(crate) fn bin_name(self) -> &'static str {
        match self {
            Program::Sigil => "sigil",
            Program::SigilAgent => "sigil-agent",
        }
    }

    /// The clap definition of the program, as its binary parses arguments.
    pub(crate) fn command(self) -> clap::Command {
        match self {
            Program::Sigil => crate::Cli::command(),
            Program::SigilAgent => sigil_agent::cli::command(),
        }
    }

    /// Man page section: 1 (user commands) or 8 (daemons).
    fn man_section(self) -> &'static str {
        match self {
            Program::Sigil => "1",
            Program::SigilAgent => "8",
        }
    }
}

/// Shells `sigil completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// bash (bash-completion loads it from /usr/share/bash-completion/completions/sigil).
    Bash,
    /// zsh (a `#compdef` file: `_sigil` on the fpath).
    Zsh,
    /// fish (vendor_completions.d/sigil.fish).
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `sigil completion SHELL`.
#[derive(Debug, Args)]
pub(crate) struct CompletionArgs {
    /// Shell to write the completion script for.
    #[arg(value_enum)]
    shell: Shell,
    /// Program to complete: `sigil` or the standalone `sigil-agent` binary.
    #[arg(long, value_enum, default_value_t = Program::Sigil)]
    program: Program,
}

/// `sigil man --out-dir DIR`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory for the pages (created if missing): `sigil.1` and one page per
    /// subcommand (`sigil-token-create.1`), or `sigil-agent.8`.
    #[arg(long)]
    out_dir: PathBuf,
    /// Program to document: `sigil` or the standalone `sigil-agent` binary.
    #[arg(long, value_enum, default_value_t = Program::Sigil)]
    program: Program,
}

/// Writes the completion script of `program` for `shell` to `out`.
pub(crate) fn completion(shell: Shell, program: Program, out: &mut dyn Write) {
    let mut cmd = program.command();
    clap_complete::generate(shell.generator(), &mut cmd, program.bin_name(), out);
}

/// Renders one man page per (visible) command of `program` into `dir`; returns
/// the paths written, the program's own page first.
pub(crate) fn man_pages(program: Program, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = program.command().bin_name(program.bin_name()).disable_help_subcommand(true);
    // Building sets each subcommand's display name (`sigil-token-create`), the page's title and file name.
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, program.man_section(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, section: &str, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone()).section(section).manual("Sigil Manual");
    let path = dir.join(page.get_filename());
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, section, dir, written)?;
    }
    Ok(())
}

/// `sigil completion`: the script on stdout.
pub(crate) fn run_completion(a: CompletionArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    completion(a.shell, a.program, &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// `sigil man`: the pages in `--out-dir`, their count on stderr.
pub(crate) fn run_man(a: ManArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let pages = man_pages(a.program, &a.out_dir).with_context(|| format!("cannot write man pages to {}", a.out_dir.display()))?;
    eprintln!("{} man page(s) written to {}", pages.len(), a.out_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_subcommands(program: Program) -> Vec<String> {
        program
            .command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    fn script(shell: Shell, program: Program) -> String {
        let mut out = Vec::new();
        completion(shell, program, &mut out);
        String::from_utf8(out).expect("completion scripts are UTF-8")
    }

    #[test]
    fn every_top_level_subcommand_is_completed_in_every_shell() {
        let subs = visible_subcommands(Program::Sigil);
        assert!(subs.len() > 20, "the sigil CLI has its subcommands: {subs:?}");
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell, Program::Sigil);
            for sub in &subs {
                // bash lists them as words of `opts="..."`, zsh as 'NAME:help', fish as `-a "NAME"`.
                let found = match shell {
                    Shell::Bash => s.lines().any(|l| l.trim_start().starts_with("opts=") && l.split_whitespace().any(|w| w.trim_matches('"') == sub)),
                    Shell::Zsh => s.contains(&format!("'{sub}:")),
                    Shell::Fish => s.contains(&format!("-a \"{sub}\"")),
                };
                assert!(found, "{shell:?} completion lacks subcommand {sub}");
            }
        }
    }

    #[test]
    fn completion_and_man_are_subcommands_of_the_cli_itself() {
        let subs = visible_subcommands(Program::Sigil);
        assert!(subs.iter().any(|s| s == "completion") && subs.iter().any(|s| s == "man"), "{subs:?}");
    }

    #[test]
    fn every_top_level_subcommand_gets_a_man_page_listed_in_sigil_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(Program::Sigil, dir.path()).expect("man pages");
        assert_eq!(pages[0], dir.path().join("sigil.1"));
        let main_page = std::fs::read_to_string(&pages[0]).expect("sigil.1");
        assert!(main_page.contains(".TH sigil 1"), "sigil.1 has no title line");
        for sub in visible_subcommands(Program::Sigil) {
            let page = dir.path().join(format!("sigil-{sub}.1"));
            let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            assert!(text.contains(&format!(".TH sigil-{sub} 1")), "{} has no title line", page.display());
            let roff_name = format!("sigil-{sub}").replace('-', "\\-");
            assert!(main_page.contains(&format!("{roff_name}(1)")), "sigil.1 does not list {sub}");
        }
        // Nested commands too: `man sigil-token-create`.
        assert!(dir.path().join("sigil-token-create.1").exists());
    }

    #[test]
    fn agent_binary_pages_and_completions_come_from_its_own_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(Program::SigilAgent, dir.path()).expect("man pages");
        assert_eq!(pages, vec![dir.path().join("sigil-agent.8")]);
        let page = std::fs::read_to_string(&pages[0]).expect("sigil-agent.8");
        assert!(page.contains(".TH sigil-agent 8"));
        for flag in ["config", "oneshot", "check"] {
            assert!(page.contains(&format!("\\-\\-{flag}")), "sigil-agent.8 lacks --{flag}");
            assert!(script(Shell::Bash, Program::SigilAgent).contains(&format!("--{flag}")), "bash completion lacks --{flag}");
        }
        // The hidden compatibility flags (`--addr` accepted and ignored) are not offered.
        assert!(!page.contains("\\-\\-addr"));
        assert!(script(Shell::Bash, Program::SigilAgent).contains("_sigil__agent()"));
    }
}
