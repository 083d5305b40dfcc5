//! The tenant's classification of errors (seed 000): an error class names who hears of a
//! notification that names no recipients, and how urgently, so a producer that knows only
//! what went wrong reaches the right people without knowing the topics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{FieldError, Priority, notification_type::is_valid_key, request::Audience};

/// The most classes a tenant's table holds.
pub const MAX_CLASSES: usize = 200;

/// `PUT /v1/classifications`: the whole table, replacing the one before.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Classifications {
    /// Error class (`validation`, `mapping`, `auth`, `system`, or your own) to its audience
    /// and priority: `{"system": {"audience": "support", "priority": "urgent"}}`.
    #[serde(default, deserialize_with = "crate::object::map")]
    pub classes: BTreeMap<String, Classification>,
}

/// What an error class means for a notification that reports one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    /// Its notifications that name no recipients go to this topic.
    pub audience: Audience,
    /// The priority of its notifications that name none; default: their severity's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

impl Classifications {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.classes.len() > MAX_CLASSES {
            errors.push(FieldError::new("classes", format!("at most {MAX_CLASSES} classes")));
        }
        for class in self.classes.keys().filter(|c| !is_valid_key(c)) {
            errors.push(FieldError::new(
                format!("classes.{class}"),
                "an error class must be 1 to 200 letters, digits and . _ - : /",
            ));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// What the classification decided for one notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// The request's error class, else its type's.
    pub error_class: Option<String>,
    /// The class's audience, else the type's.
    pub audience: Option<Audience>,
    /// The class's priority.
    pub priority: Option<Priority>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_names_valid_classes_each_with_an_audience() {
        let table: Classifications = serde_json::from_value(json!({"classes": {
            "system": {"audience": "support", "priority": "urgent"}, "validation": {"audience": "customer"}}}))
        .unwrap();
        assert_eq!(table.validate(), Ok(()));
        assert_eq!(table.classes["validation"], Classification { audience: Audience::Customer, priority: None });

        let bad: Classifications =
            serde_json::from_value(json!({"classes": {"no spaces": {"audience": "support"}}})).unwrap();
        assert_eq!(bad.validate().unwrap_err()[0].field, "classes.no spaces");
        assert!(
            serde_json::from_value::<Classifications>(json!({"classes": {"x": {}}})).is_err(),
            "audience is required"
        );
        assert!(
            serde_json::from_value::<Classifications>(json!({"classes": {"x": ["support"]}})).is_err(),
            "an object"
        );
    }
}
