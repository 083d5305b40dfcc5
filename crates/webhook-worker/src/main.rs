//! The webhook worker: consumes `notify.webhooks` and posts each tenant's events to its
//! endpoints, signed per Standard Webhooks (docs/webhooks.md).

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::webhooks::main())
}
