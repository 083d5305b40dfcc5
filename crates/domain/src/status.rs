use serde::{Deserialize, Serialize};

/// The life of one delivery (one recipient on one channel):
/// `pending -> queued -> sending -> sent -> delivered`, with `retrying` (back to `queued`
/// when due) and the terminal `failed`, `bounced`, `undelivered`, `suppressed`, `cancelled`.
/// [`DeliveryStatus::next`] lists every move; [`DeliveryStatus::phase`] groups the statuses
/// as the notification's aggregate counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Queued,
    Sending,
    Retrying,
    Sent,
    Delivered,
    Failed,
    Bounced,
    Undelivered,
    Suppressed,
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 11] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Bounced,
        DeliveryStatus::Undelivered,
        DeliveryStatus::Suppressed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Where the status stands in the delivery's life, as its notification's aggregate
    /// counts it.
    pub fn phase(self) -> Phase {
        use DeliveryStatus::*;
        match self {
            Pending | Queued | Sending | Retrying => Phase::InFlight,
            Sent | Delivered => Phase::Succeeded,
            Failed | Bounced | Undelivered => Phase::Failed,
            Cancelled => Phase::Cancelled,
            Suppressed => Phase::Suppressed,
        }
    }

    /// A worker never acts on a delivery in a terminal state: a message for it is stale.
    /// `sent` counts as terminal for sending (only provider callbacks move it further).
    pub fn is_terminal(self) -> bool {
        self.phase() != Phase::InFlight
    }

    /// The statuses a delivery in this one may move to. Before a provider has it
    /// (`pending`, `queued`, `retrying`): queued by the relay, claimed by a worker,
    /// cancelled (by the tenant, an erasure or the sweeper), failed by the sweeper when
    /// stranded, or given an outcome whose claim a crash lost. While `sending`: its
    /// outcome, taken over (`sending` again) once its lease ran out, or the sweeper's
    /// verdict. After: receipts move `sent` forwards and a `delivered` email may still
    /// bounce; a `failed` delivery is retried by hand as a new series (`pending`).
    /// `suppressed` is written at accept only. Nothing leaves `bounced`, `undelivered`,
    /// `suppressed` or `cancelled`.
    pub fn next(self) -> &'static [DeliveryStatus] {
        use DeliveryStatus::*;
        match self {
            Pending => &[Queued, Sending, Sent, Retrying, Failed, Cancelled],
            Queued => &[Sending, Sent, Retrying, Failed, Cancelled],
            Retrying => &[Queued, Sending, Sent, Retrying, Failed, Cancelled],
            Sending => &[Sending, Sent, Retrying, Failed, Cancelled],
            Sent => &[Delivered, Bounced, Undelivered, Failed],
            Delivered => &[Bounced],
            Failed => &[Pending],
            Bounced | Undelivered | Suppressed | Cancelled => &[],
        }
    }

    pub fn can_become(self, to: DeliveryStatus) -> bool {
        self.next().contains(&to)
    }
}

/// The groups of delivery statuses a notification's aggregate tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `pending`, `queued`, `sending`, `retrying`: not settled yet.
    InFlight,
    /// `sent`, `delivered`.
    Succeeded,
    /// `failed`, `bounced`, `undelivered`.
    Failed,
    Cancelled,
    /// Never sent (preferences, no address, the suppression list); counts for nothing.
    Suppressed,
}

/// The aggregate of a notification's deliveries: `pending -> processing -> sent | partial |
/// failed | cancelled` ([`NotificationStatus::of`]). The SQL function `notification_status`
/// states the same rule for the store (a test checks that the two agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Pending,
    Processing,
    Sent,
    Partial,
    Failed,
    Cancelled,
}

impl NotificationStatus {
    const ALL: [NotificationStatus; 6] = [
        NotificationStatus::Pending,
        NotificationStatus::Processing,
        NotificationStatus::Sent,
        NotificationStatus::Partial,
        NotificationStatus::Failed,
        NotificationStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Processing => "processing",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Partial => "partial",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The aggregate of deliveries in these statuses: `processing` while any is in
    /// flight; then `partial` if some succeeded and some failed, `sent` if some
    /// succeeded, `failed` if some failed, `cancelled` if some were cancelled. Suppressed
    /// deliveries count for nothing, so a notification whose deliveries were all
    /// suppressed is `sent`.
    pub fn of(deliveries: impl IntoIterator<Item = DeliveryStatus>) -> NotificationStatus {
        let (mut in_flight, mut succeeded, mut failed, mut cancelled) = (false, false, false, false);
        for delivery in deliveries {
            match delivery.phase() {
                Phase::InFlight => in_flight = true,
                Phase::Succeeded => succeeded = true,
                Phase::Failed => failed = true,
                Phase::Cancelled => cancelled = true,
                Phase::Suppressed => {}
            }
        }
        match () {
            _ if in_flight => NotificationStatus::Processing,
            _ if succeeded && failed => NotificationStatus::Partial,
            _ if succeeded => NotificationStatus::Sent,
            _ if failed => NotificationStatus::Failed,
            _ if cancelled => NotificationStatus::Cancelled,
            _ => NotificationStatus::Sent,
        }
    }

    /// The status a notification is accepted with: [`NotificationStatus::of`], except
    /// `pending` rather than `processing`, as nothing has happened to its deliveries yet.
    /// It stays `pending` until a delivery's outcome (or a cancel, retry, receipt or
    /// sweep) refreshes it: claiming a delivery does not touch the notification.
    pub fn initial(deliveries: impl IntoIterator<Item = DeliveryStatus>) -> NotificationStatus {
        match Self::of(deliveries) {
            NotificationStatus::Processing => NotificationStatus::Pending,
            status => status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    #[test]
    fn every_delivery_can_settle_and_nothing_leaves_the_final_statuses() {
        for status in DeliveryStatus::ALL {
            let settles = status.next().iter().any(|s| s.is_terminal()) || status.is_terminal();
            assert!(settles, "{status:?}");
        }
        for status in [Bounced, Undelivered, Suppressed, Cancelled] {
            assert!(status.next().is_empty(), "{status:?}");
        }
        // Only a retry by hand starts a delivery again; nothing becomes suppressed later.
        let into = |to| DeliveryStatus::ALL.into_iter().filter(move |s| s.can_become(to)).collect::<Vec<_>>();
        assert_eq!(into(Pending), [Failed]);
        assert!(into(Suppressed).is_empty());
    }

    #[test]
    fn the_aggregate_of_a_notification() {
        let of = |d: &[DeliveryStatus]| NotificationStatus::of(d.iter().copied());
        assert_eq!(of(&[Sent, Sending]), NotificationStatus::Processing);
        assert_eq!(of(&[Delivered, Bounced, Suppressed]), NotificationStatus::Partial);
        assert_eq!(of(&[Sent, Suppressed]), NotificationStatus::Sent);
        assert_eq!(of(&[Undelivered, Cancelled]), NotificationStatus::Failed);
        assert_eq!(of(&[Cancelled, Suppressed]), NotificationStatus::Cancelled);
        assert_eq!(of(&[Suppressed]), NotificationStatus::Sent);
        assert_eq!(NotificationStatus::initial([Pending, Delivered]), NotificationStatus::Pending);
        assert_eq!(NotificationStatus::initial([Suppressed, Delivered]), NotificationStatus::Sent);
    }
}
