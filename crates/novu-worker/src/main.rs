//! The novu channel worker: consumes `notify.novu` and triggers Novu workflows (or the
//! sandbox), as `novu.providers` names.

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(domain::Channel::Novu, &[&providers::novu::UNIT]))
}
