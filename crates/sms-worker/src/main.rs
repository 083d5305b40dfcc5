fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(sms_worker::CHANNEL, sms_worker::load, sms_worker::run))
}
