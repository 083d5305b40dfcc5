//! A push delivery's device, read by the claim (`DeliveryJob::device`): the device its
//! recipient names, as registered now. Without one (the app unregistered it, its token
//! moved to another subscriber, the subscriber's bound evicted it, or a provider reported
//! it gone) there is nothing to send to: the attempt fails permanently without calling a
//! provider, as an address that cannot be opened does.

use domain::{Channel, DeliveryJob, FailureKind, SendFailure};

/// The code of an attempt whose device was removed since the accept.
pub const REMOVED: &str = "device_removed";

/// `Err` for a push job without its device; `Ok` for any other job.
pub fn check(job: &DeliveryJob) -> Result<(), SendFailure> {
    if job.channel == Channel::Push && job.device.is_none() {
        return Err(SendFailure::new(
            FailureKind::Permanent,
            REMOVED,
            "the subscriber no longer has this device: it was removed since the notification was accepted",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use domain::{
        Content, Priority,
        push::{Platform, PushDevice},
    };
    use uuid::Uuid;

    use super::*;

    fn job(channel: Channel, device: Option<PushDevice>) -> DeliveryJob {
        DeliveryJob {
            delivery_id: Uuid::nil(),
            notification_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            channel,
            attempt: 1,
            retry_base: 0,
            recipient: "phone-1".into(),
            kind: "t".into(),
            priority: Priority::Normal,
            content: Content::default(),
            data: Default::default(),
            workflow: None,
            retry: None,
            device,
        }
    }

    #[test]
    fn only_a_push_job_without_its_device_fails() {
        let device = PushDevice { id: "phone-1".into(), platform: Platform::Fcm, token: "t".into(), app: None };
        assert!(check(&job(Channel::Push, Some(device))).is_ok());
        assert!(check(&job(Channel::Email, None)).is_ok());
        let failure = check(&job(Channel::Push, None)).unwrap_err();
        assert_eq!(
            (failure.kind, failure.code.as_str(), failure.address_gone),
            (FailureKind::Permanent, REMOVED, false)
        );
    }
}
