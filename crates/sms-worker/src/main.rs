//! The sms channel worker: consumes `notify.sms` and sends through the providers
//! `sms.providers` names, in order of preference: Twilio, Amazon SNS, or the sandbox.

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(
        domain::Channel::Sms,
        &[&providers::twilio::SMS_UNIT, &providers::sns::UNIT],
    ))
}
