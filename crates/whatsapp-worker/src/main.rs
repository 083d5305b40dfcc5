fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(whatsapp_worker::CHANNEL, whatsapp_worker::load, whatsapp_worker::run))
}
