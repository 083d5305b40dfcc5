//! The email channel worker: consumes `notify.email` and sends through the providers
//! `email.providers` names, in order of preference: Amazon SES, an SMTP server, or the sandbox.

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(domain::Channel::Email, &[&providers::ses::UNIT, &providers::smtp::UNIT]))
}
