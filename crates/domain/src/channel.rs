use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A delivery channel. The routing key of its queue is [`Channel::as_str`]; `in_app` has
/// no queue: the intake writes its deliveries to the inbox itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Whatsapp,
    Novu,
    Chat,
    Push,
    InApp,
}

impl Channel {
    pub const ALL: [Channel; 7] =
        [Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Novu, Channel::Chat, Channel::Push, Channel::InApp];
    /// The channels delivered through a queue and a worker.
    pub const QUEUED: [Channel; 6] =
        [Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Novu, Channel::Chat, Channel::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Novu => "novu",
            Channel::Chat => "chat",
            Channel::Push => "push",
            Channel::InApp => "in_app",
        }
    }

    /// Whether deliveries on this channel go through the outbox, a queue and a worker.
    pub fn is_queued(self) -> bool {
        self != Channel::InApp
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown channel `{0}`")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

/// How urgent a notification is. The relay publishes higher ranks first, so `urgent` and
/// `high` work overtakes a backlog of `normal` and `low` work waiting in the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    /// Stored in the outbox; larger is more urgent.
    pub fn rank(self) -> i16 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        [Priority::Low, Priority::Normal, Priority::High, Priority::Urgent].into_iter().find(|p| p.as_str() == s)
    }
}
