//! The whatsapp channel worker: consumes `notify.whatsapp` and sends through the providers
//! `whatsapp.providers` names, in order of preference: Twilio, Meta's Cloud API, or the sandbox.

fn main() -> std::process::ExitCode {
    bootstrap::exit_code(worker::cli::main(
        domain::Channel::Whatsapp,
        &[&providers::twilio::WHATSAPP_UNIT, &providers::meta::UNIT],
    ))
}
