//! The push channel worker: consumes `notify.push` and sends through the providers
//! `push.providers` names: FCM HTTP v1 (`fcm`), APNs (`apns`), Web Push (`webpush`), or the
//! sandbox. A push delivery's device (claimed with it) names its platform, whose unit alone
//! may send to it.

fn main() -> std::process::ExitCode {
    use providers::push;
    bootstrap::exit_code(worker::cli::main(
        domain::Channel::Push,
        &[&push::fcm::UNIT, &push::apns::UNIT, &push::webpush::UNIT],
    ))
}
