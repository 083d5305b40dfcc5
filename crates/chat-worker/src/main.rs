//! The chat channel worker: consumes `notify.chat` and sends through the providers
//! `chat.providers` names: Slack's bot (`slack`), Slack, Teams and Discord webhooks, or the
//! sandbox. Each chat address names its provider, which alone may send to it.

fn main() -> std::process::ExitCode {
    use providers::chat;
    bootstrap::exit_code(worker::cli::main(
        domain::Channel::Chat,
        &[&chat::SLACK, &chat::SLACK_WEBHOOK, &chat::TEAMS, &chat::DISCORD],
    ))
}
