use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use domain::view::NotificationView;
use store::Retried;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    routes::parse_id,
};

#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", operation_id = "retryDelivery", tag = "deliveries",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Queued again: the notification as it now is", body = NotificationView),
        (status = 404, description = "No such delivery for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery has neither failed nor been stranded", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/deliveries/{id}/retry`: queues a `failed` delivery again, as a new series
/// of attempts, or a stranded one (not final, with nothing moving it on for
/// `limits.stranded_after`) as the attempt it was at. Answers `202` with the notification.
pub async fn retry(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NotificationView>), ApiError> {
    let tenant = auth.0.tenant_id;
    match app.store.retry_delivery(tenant, parse_id(&id)?, &auth.origin(), app.stranded_after).await? {
        Retried::Queued(notification) => {
            tracing::info!(tenant_id = %tenant, delivery_id = %id, "delivery retried");
            let view = app.store.get_notification(tenant, notification).await?.ok_or(ApiError::NotFound)?;
            Ok((StatusCode::ACCEPTED, Json(view)))
        }
        Retried::NotFailed(status) => Err(ApiError::Conflict {
            code: "not_retryable",
            detail: format!("only a failed delivery can be retried; this one is {status}"),
        }),
        Retried::InFlight(status) => Err(ApiError::Conflict {
            code: "in_flight",
            detail: format!(
                "this delivery is {status} and still moving; one with nothing moving it on for {} can be retried",
                humantime_serde::re::humantime::format_duration(app.stranded_after)
            ),
        }),
        Retried::NotFound => Err(ApiError::NotFound),
    }
}
