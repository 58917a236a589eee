//! `exocom`: an ExoCom-compatible message bus (see [`exo_cli::exocom`]).

fn main() -> std::process::ExitCode {
    exo_cli::exocom::main()
}
