//! The `sigil-agent` binary: `sigil agent` alone, without the broker linked in,
//! so the agent maps (and keeps resident) a fraction of the code.

fn main() -> std::process::ExitCode {
    sigil_agent::cli::main()
}
