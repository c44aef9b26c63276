//! The `sigil` binary.

fn main() -> std::process::ExitCode {
    sigil::main()
}
