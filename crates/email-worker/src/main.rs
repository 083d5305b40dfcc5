fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(email_worker::CHANNEL, email_worker::load, email_worker::run))
}
