fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(novu_worker::CHANNEL, novu_worker::load, novu_worker::run))
}
