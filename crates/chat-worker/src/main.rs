fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(chat_worker::CHANNEL, chat_worker::load, chat_worker::run))
}
