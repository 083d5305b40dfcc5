//! The push channel worker: consumes `notify.push` and sends through the providers
//! `push.providers` names: FCM HTTP v1 (`fcm`), APNs (`apns`), Web Push (`webpush`), or the
//! sandbox. A push delivery's device (claimed with it) names its platform, whose unit alone
//! may send to it.

fn main() -> std::process::ExitCode {
    // MERGE: the units land on their own branches; then this list is
    // `&[&providers::push::fcm::UNIT, &providers::push::apns::UNIT, &providers::push::webpush::UNIT]`.
    let units: &[&dyn providers::ProviderUnit] = &[];
    bootstrap::exit_code(worker::cli::main(domain::Channel::Push, units))
}
